"""The predictor registry: names -> classes, so the CLI, `auto` and the conformance test see one list."""

from __future__ import annotations

from typing import Any

from regmix_plugin.errors import check_choice
from regmix_plugin.fit.base import FitError, Predictor


def _classes() -> dict[str, type[Predictor]]:
    # Imported here, not at module import, so `import regmix_plugin.fit.registry` stays cheap.
    from regmix_plugin.fit.auto import AutoPredictor
    from regmix_plugin.fit.efflaw import EffectiveDataLawPredictor
    from regmix_plugin.fit.ensemble import LawBlendPredictor, StackPredictor
    from regmix_plugin.fit.gbdt import LightGBMPredictor
    from regmix_plugin.fit.gp import GPPredictor
    from regmix_plugin.fit.jointlaw import JointLawPredictor
    from regmix_plugin.fit.linear import LinearPredictor
    from regmix_plugin.fit.mixing_law import LogLawPredictor, MixingLawPredictor
    from regmix_plugin.fit.percolumn import PerColumnPredictor

    classes = (LinearPredictor, LightGBMPredictor, MixingLawPredictor, LogLawPredictor, LawBlendPredictor,
               EffectiveDataLawPredictor, GPPredictor, StackPredictor, PerColumnPredictor, JointLawPredictor, AutoPredictor)
    return {c.name: c for c in classes}


def available() -> list[str]:
    """Registered predictor names, in the order the CV table lists them."""
    return list(_classes())


def predictor_class(name: Any, field: str = "--predictor") -> type[Predictor]:
    classes = _classes()
    check_choice(field, name, classes)
    return classes[name]


def get_predictor(name: str, **params: Any) -> Predictor:
    """A new, unfitted predictor ``name`` with hyperparameters ``params``; errors list the valid names."""
    cls = predictor_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise FitError(f"{name}: bad hyperparameters ({e}); see `{cls.__name__}` for the valid ones") from None

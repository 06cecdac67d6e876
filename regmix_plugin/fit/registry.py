"""The predictor registry: names -> classes, so the CLI, `auto` and the conformance test see one list.

Open: a predictor registers itself where it is defined, with the :func:`register` decorator, and any module
(a user's own) can do the same before `regmix fit` runs. The built-in modules are listed here only so that
their names resolve without importing every predictor (and LightGBM, scikit-learn) at start-up.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from regmix_plugin.errors import check_choice
from regmix_plugin.fit.base import ARTIFACT_FORMAT, ARTIFACT_VERSION, FitError, Predictor, State

# Imported on first use, in this order (the order `available` lists the names in).
BUILTIN_MODULES = ("linear", "lightgbm", "mixing_law", "stack", "efflaw", "gp", "percolumn", "jointlaw", "phaselaw",
                   "auto")

_REGISTRY: dict[str, type[Predictor]] = {}
P = TypeVar("P", bound=type[Predictor])


def register(cls: P) -> P:
    """Class decorator: make ``cls`` available by its ``name`` to `regmix fit`, `auto`, stacks and loading."""
    if not cls.name:
        raise FitError(f"{cls.__name__}: a registered predictor needs a non-empty `name`")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise FitError(f"{cls.__name__}: the name {cls.name!r} is taken by {other.__name__}; choose another name")
    _REGISTRY[cls.name] = cls
    return cls


def _classes() -> dict[str, type[Predictor]]:
    # Imported here, not at module import, so `import regmix_plugin.fit.registry` stays cheap.
    for module in BUILTIN_MODULES:
        importlib.import_module(f"regmix_plugin.fit.{module}")
    # Whichever module was imported first, the built-in ones list in BUILTIN_MODULES order (a module registers
    # its classes top to bottom), then the others as they registered.
    order = {f"regmix_plugin.fit.{m}": i for i, m in enumerate(BUILTIN_MODULES)}
    names = list(_REGISTRY)
    ranked = sorted(names, key=lambda n: (order.get(_REGISTRY[n].__module__, len(order)), names.index(n)))
    return {n: _REGISTRY[n] for n in ranked}


def available() -> list[str]:
    """Registered predictor names: the built-in ones first, then any registered elsewhere."""
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


def as_spec(item: Any, field: str) -> tuple[str, dict]:
    """A composite's member as (registry name, hyperparameters): given by name, as a predictor instance, or
    as the ``{"predictor": name, "params": {...}}`` an instance is saved as."""
    if isinstance(item, Predictor):
        predictor_class(item.name, field=field)
        return item.name, dict(item.get_params())
    if isinstance(item, dict) and set(item) == {"predictor", "params"}:
        predictor_class(item["predictor"], field=field)
        return item["predictor"], dict(item["params"])
    return item, {}  # a name: checked where the member is built, with the message that place gives


def load_predictor(directory: str | os.PathLike) -> Predictor:
    """Load a predictor saved with :meth:`Predictor.save`; validates the folder and never runs code."""
    directory = Path(directory)
    path = directory / "predictor.json"
    if not path.is_file():
        raise FitError(f"{directory}: no predictor.json; give a folder written by `regmix fit` (or Predictor.save)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise FitError(f"{path}: cannot read ({e.__class__.__name__}: {e}); refit the model") from None
    if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
        raise FitError(f"{path}: format is not {ARTIFACT_FORMAT!r}; give a folder written by `regmix fit`")
    if doc.get("version") != ARTIFACT_VERSION:
        raise FitError(f"{path}: artifact version {doc.get('version')!r} is not supported (expected {ARTIFACT_VERSION}); refit")
    cls = predictor_class(doc.get("name"), field=f"{path}: name")
    pred = cls(**doc.get("params", {}))
    arrays: dict[str, np.ndarray] = {}
    if doc.get("arrays"):
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in doc["arrays"]}
    texts = {k: (directory / k).read_text(encoding="utf-8") for k in doc.get("texts", [])}
    children = {k: load_predictor(directory / k) for k in doc.get("children", [])}
    pred._set_state(State(meta=doc.get("state", {}), arrays=arrays, texts=texts, children=children))
    pred.n_features_in_ = int(doc["n_features_in"])
    return pred

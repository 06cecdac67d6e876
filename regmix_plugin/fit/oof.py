"""Out-of-fold predictions fitted once per model and target on `auto`'s folds, and candidates assembled from them.

`auto` scores many candidates on the same K folds, and most of them share models: the stack's members are
the `eff-law` and `lightgbm` candidates themselves, and the `log-law` chooses its floor from the very laws
`law-blend` weighs. Scored one by one, each of those composites ran its own inner K-fold CV inside every
outer fold (K x K fits per member); on RegMix's 512 runs that was most of `auto`'s half hour.

Here each (model, what it is fitted on) is fitted once per fold and kept. A composite candidate (anything
with ``oof_specs``/``select``/``combine``: the stack, law-blend, the log-law with ``eps="cv"``) is scored by
repeating only its cheap selection step on each fold's training rows, on its members' out-of-fold
predictions, and predicting the held-out rows from the members' fold models:
``oof[test] = combine(select(P[train], y[train]), P[test])``. This is one level of cross-validation, not
two: the training rows' out-of-fold predictions came from models that saw the held-out fold, so the
selection (two or three weights, or one floor out of three, from hundreds of rows) sees a little of it.
The held-out predictions themselves never do. docs/predictors.md measures both ways side by side.

When the chosen composite's own folds are ``auto``'s folds (same K and seed, the default), its final fit
reuses these out-of-fold predictions too (``fit_from_oof``), which gives the same model as ``fit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from regmix_plugin.fit.base import FitData, Predictor

Spec = tuple[str, dict]


def make(spec: Spec) -> Predictor:
    from regmix_plugin.fit.registry import get_predictor

    return get_predictor(spec[0], **spec[1])


def spec_key(spec: Spec) -> str:
    """Two specs that build the same model (defaults spelled out or not) get the same key."""
    return spec[0] + json.dumps(make(spec).get_params(), sort_keys=True, default=str)


def members(model: Predictor) -> list[Spec]:
    """The models whose out-of-fold predictions a composite selects on; [] for a model that is fitted directly."""
    specs = getattr(model, "oof_specs", None)
    return list(specs()) if callable(specs) else []


def _is_target(t) -> bool:
    """A plain target per run (composites select on it), not the FitData of a model that needs more."""
    return isinstance(t, np.ndarray) and t.ndim == 1


def same_folds(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, z) for x, z in zip(a, b))


@dataclass
class FoldCache:
    """Out-of-fold predictions on ``folds``, one entry per (model, fitted-on); ``step(label, fold, k)`` is
    called before each fold fit (the progress display) and ``fits`` counts them."""

    X: np.ndarray
    folds: list[np.ndarray]
    step: Callable[[str, int, int], None] = lambda label, fold, k: None
    _oof: dict = field(default_factory=dict)
    fits: int = 0

    def has(self, spec: Spec, target_key: str) -> bool:
        return (spec_key(spec), target_key) in self._oof

    def base(self, spec: Spec, t: np.ndarray | FitData, target_key: str, label: str = "",
             folds: list[int] | None = None) -> np.ndarray:
        """Out-of-fold predictions of ``spec`` fitted on ``t`` (the target per run, or the FitData of a model
        that needs more); NaN on the folds not yet fitted. ``folds`` limits the work to those fold numbers (the
        rest stay as they are)."""
        key = (spec_key(spec), target_key)
        oof, done = self._oof.setdefault(key, (np.full(len(self.X), np.nan), set()))
        n = len(self.X)
        for i in range(len(self.folds)) if folds is None else folds:
            if i in done:
                continue
            self.step(label or spec[0], i, len(self.folds))
            test = self.folds[i]
            train = np.setdiff1d(np.arange(n), test)
            model = make(spec)
            model.fit(t.take(train)) if isinstance(t, FitData) else model.fit(self.X[train], t[train])
            oof[test] = model.predict(self.X[test])
            done.add(i)
            self.fits += 1
        return oof

    def members_matrix(self, model: Predictor, t: np.ndarray, target_key: str, label: str = "",
                       folds: list[int] | None = None) -> np.ndarray:
        return np.column_stack([self.base(s, t, target_key, label, folds) for s in members(model)])

    def composite(self, model: Predictor, t: np.ndarray, target_key: str, label: str = "",
                  folds: list[int] | None = None) -> np.ndarray:
        """Out-of-fold predictions of a composite: its selection repeated on each fold's training rows."""
        P = self.members_matrix(model, t, target_key, label, folds)
        n = len(t)
        oof = np.full(n, np.nan)
        for i in range(len(self.folds)) if folds is None else folds:
            test = self.folds[i]
            train = np.setdiff1d(np.arange(n), test)
            oof[test] = model.combine(model.select(P[train], t[train]), P[test])
        return oof

    def predictions(self, model_spec: Spec, t: np.ndarray, target_key: str, label: str = "",
                    folds: list[int] | None = None) -> np.ndarray:
        """Out-of-fold predictions of any model: a composite through its members, anything else directly."""
        model = make(model_spec)
        if members(model) and _is_target(t):
            return self.composite(model, t, target_key, label, folds)
        return self.base(model_spec, t, target_key, label, folds)

    def refit(self, model_spec: Spec, t: np.ndarray, target_key: str) -> Predictor:
        """The model fitted on every run; a composite whose folds are these reuses its members' predictions."""
        model = make(model_spec)
        if members(model) and _is_target(t) and same_folds(model.oof_folds(len(t)), self.folds) and all(
                self.has(s, target_key) for s in members(model)):
            P = self.members_matrix(model, t, target_key)
            if np.all(np.isfinite(P)):
                return model.fit_from_oof(self.X, t, P)
        return model.fit(t) if isinstance(t, FitData) else model.fit(self.X, t)

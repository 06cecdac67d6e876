"""The predictor interface: scikit-learn conventions plus a code-free artifact format.

A predictor maps mixture weights ``X`` (n_runs, n_domains), rows on the simplex, to one target value per
run (a validation loss, say; lower is better). ``__init__`` stores hyperparameters only, ``fit`` returns
``self``, learned state ends in ``_``, and randomness enters through ``random_state``.

What a fit sees is one :class:`FitData`: the mixtures, the target and, when the caller has them, the target's
columns with their weights and other metrics of the same runs. A predictor declares in ``needs`` which of
those extras it uses (``"columns"``, ``"auxiliary"``); `fit_model` and `auto` give them by that declaration,
never by the predictor's name. ``fit(X, y)`` with arrays still works for every predictor.

Artifacts are a folder: ``predictor.json`` (name, hyperparameters, JSON state), ``arrays.npz`` (read with
``allow_pickle=False``) and, for LightGBM, the booster's native text model. Loading never executes code:
there is no pickle anywhere.
"""

from __future__ import annotations

import inspect
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_bytes, atomic_write_json, atomic_write_text

ARTIFACT_FORMAT = "regmix-predictor"
ARTIFACT_VERSION = 1


class FitError(RegmixError):
    """Bad input to a predictor, a predictor used before fit, or an unreadable artifact."""


class NotFittedError(FitError):
    pass


EXTRAS = ("columns", "auxiliary")


@dataclass(frozen=True)
class FitData:
    """The data one fit sees.

    X: mixture weights (runs x domains). y: the target per run.
    columns, column_weights: the target's columns (runs x k) and weights when the target is a weighted sum of
    columns (``mean(valid/*/loss)``); None for a target given as values only.
    auxiliary, auxiliary_names: other metrics of the same runs (runs x m), e.g. the other domains' losses.
    """

    X: np.ndarray
    y: np.ndarray
    columns: np.ndarray | None = None
    column_weights: np.ndarray | None = None
    auxiliary: np.ndarray | None = None
    auxiliary_names: tuple[str, ...] = ()

    def take(self, rows: np.ndarray) -> "FitData":
        """The same data on a subset of runs (a CV fold)."""
        return FitData(self.X[rows], self.y[rows], None if self.columns is None else self.columns[rows],
                       self.column_weights, None if self.auxiliary is None else self.auxiliary[rows],
                       self.auxiliary_names)

    def without_extras(self) -> "FitData":
        return FitData(self.X, self.y)


@dataclass
class State:
    """What a fitted predictor saves: JSON-able values, numeric arrays and text files (a LightGBM model)."""

    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    children: dict[str, "Predictor"] = field(default_factory=dict)


class Predictor:
    """Base class. Subclasses set ``name``, implement ``_fit``, ``_predict``, ``_get_state``, ``_set_state``.

    ``smooth`` says that ``predict`` is differentiable in the weights, so exact optimisation over the
    simplex (scipy) can use it; tree models are piecewise constant and are searched by sampling instead.
    """

    name: ClassVar[str] = ""
    smooth: ClassVar[bool] = False
    # How flexible the model is, for `auto`'s rule "the most constrained candidate within one standard error
    # of the best" (fit/auto.py; DECISIONS 78): 0 a law decreasing in every domain's share with shrinkage
    # (eff-law), 1 one parametric law, 2 several laws (per column or group, or jointly), 3 a smooth
    # non-parametric model (GP), 4 trees and anything with them. None: 3 if smooth, else 4.
    flexibility: ClassVar[int | None] = None
    # Which extras of FitData the fit uses when they are there (a subset of EXTRAS).
    needs: ClassVar[frozenset[str]] = frozenset()
    # A composite that cross-validates candidates itself: it takes the fit's fold count as ``n_splits`` and,
    # fitted, reports ``cv_``, ``oof_``, ``chosen_``, ``reason_`` and ``selection_`` (`auto`).
    selects_by_cv: ClassVar[bool] = False

    # ---- scikit-learn conventions --------------------------------------------------------------
    def get_params(self, deep: bool = False) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def set_params(self, **params: Any) -> "Predictor":
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise FitError(f"{self.name}.{k}: unknown parameter; valid parameters are {', '.join(sorted(valid)) or '(none)'}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, X: Any, y: Any = None, *, listener: Any = None) -> "Predictor":
        """Fit on ``X`` (weights) and ``y`` (the target), or on one :class:`FitData` passed as ``X``.

        ``listener`` (a `regmix_plugin.fit.progress.FitListener`) sees the progress of predictors that report it.
        """
        if y is None and not isinstance(X, FitData):
            raise FitError(f"{self.name}.fit: no target; call fit(X, y) or fit(FitData(...))")
        data = X if isinstance(X, FitData) else self._as_data(X, y)
        X = check_X(data.X, self.name)
        y = np.asarray(data.y, dtype=float).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise FitError(f"{self.name}.fit: X has {X.shape[0]} rows but y has {y.shape[0]}; give one target per run")
        if not np.all(np.isfinite(y)):
            raise FitError(f"{self.name}.fit: y has {int(np.sum(~np.isfinite(y)))} non-finite value(s); drop failed runs first")
        if X.shape[0] < 2:
            raise FitError(f"{self.name}.fit: {X.shape[0]} run(s); a predictor needs at least 2 runs")
        self.n_features_in_ = X.shape[1]
        self._fit_data(FitData(X, y, data.columns, data.column_weights, data.auxiliary, data.auxiliary_names), listener)
        return self

    def uses_auxiliary(self) -> bool:
        """Whether the fitted model was fitted on the auxiliary metrics (the fit records them beside it)."""
        return False

    def predict(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = check_X(X, self.name)
        if X.shape[1] != self.n_features_in_:
            raise FitError(
                f"{self.name}.predict: X has {X.shape[1]} domain columns but the model was fit on {self.n_features_in_}; "
                "give mixtures over the same domains in the same order"
            )
        return np.asarray(self._predict(X), dtype=float).reshape(-1)

    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{self.name}: this predictor is not fitted yet; call fit(X, y) or load a saved model first")

    # ---- subclass hooks ------------------------------------------------------------------------
    def _as_data(self, X: Any, y: Any) -> FitData:
        """``fit(X, y)`` with arrays: ``y`` is the target. A predictor that also reads a matrix ``y`` (its
        columns, or the target and auxiliaries) turns it into FitData here."""
        return FitData(X, y)

    def _fit_data(self, data: FitData, listener: Any = None) -> None:
        """Fit on checked data (X finite 2-D, y finite, rows equal); most predictors use X and y only."""
        self._fit(data.X, data.y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _get_state(self) -> State:
        raise NotImplementedError

    def _set_state(self, state: State) -> None:
        raise NotImplementedError

    # ---- artifacts -----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the fitted predictor into ``directory`` (JSON + NPZ + text; never pickle)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self._get_state()
        for key, child in state.children.items():
            child.save(directory / key)
        if state.arrays:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in state.arrays.items()})
            atomic_write_bytes(directory / "arrays.npz", buf.getvalue())
        for fname, text in state.texts.items():
            atomic_write_text(directory / fname, text)
        doc = {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "name": self.name,
            "params": _jsonable(self.get_params()),
            "n_features_in": int(self.n_features_in_),
            "state": _jsonable(state.meta),
            "arrays": sorted(state.arrays),
            "texts": sorted(state.texts),
            "children": sorted(state.children),
        }
        # predictor.json is written last: its presence marks a complete artifact.
        atomic_write_json(directory / "predictor.json", doc)
        return directory


def one_blas_thread():
    """A context in which BLAS runs on one thread: the least-squares fits here work on small matrices (an
    SVD of runs x (domains + 4) per step), where waking a second BLAS thread costs more than it saves, with
    the same result (measured in DECISIONS 34); LightGBM's own OpenMP threads are not affected."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def flexibility(cls: type[Predictor]) -> int:
    """The class's place in the constraint order (``Predictor.flexibility``)."""
    return int(cls.flexibility) if cls.flexibility is not None else (3 if cls.smooth else 4)


def is_smooth(model: Predictor) -> bool:
    """Whether exact (gradient) optimisation can use ``model``: composites answer for their members."""
    checker = getattr(model, "is_smooth", None)
    return bool(checker()) if callable(checker) else bool(model.smooth)


def check_X(X: Any, who: str) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as e:
        raise FitError(f"{who}: mixture weights are not numeric ({e}); give a numeric (n_runs, n_domains) array") from None
    if X.ndim != 2 or X.shape[1] < 1:
        raise FitError(f"{who}: expected a 2-D (n_runs, n_domains) array of weights, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise FitError(f"{who}: mixture weights contain NaN or inf; every weight must be a finite number >= 0")
    return X


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Predictor):  # a composite's member given as an instance; the registry reads this back
        return {"predictor": obj.name, "params": _jsonable(obj.get_params())}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj

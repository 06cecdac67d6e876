"""Calibrated prediction intervals for the predicted target: split-conformal on out-of-fold residuals.

`regmix fit` already keeps, for every proxy run, the prediction of a model that did not see that run (the
K-fold out-of-fold predictions in MODEL_DIR/cv.npz). Their absolute errors are conformity scores: the
interval at coverage ``c`` is ``prediction +- q``, with ``q`` the ``ceil((n + 1) c)``-th smallest of the
``n`` scores (split-conformal's finite-sample quantile). No refit is needed, so it costs nothing at
optimise time.

What it promises, and what not: for a new mixture drawn like the proxy runs, the interval holds the true
target about ``c`` of the time (measured on RegMix's 256 test runs by bench/uncertainty.py, docs/uncertainty.md).
It is centred on the full-data model while the scores come from fold models fit on (K-1)/K of the runs,
which makes it slightly conservative rather than exact. The chosen mixture is the predictor's own minimum (maximum, for a target to maximise),
often at the edge of the sampled region: its error can be larger than a typical run's (and biased
optimistic), so read its interval as the error scale of the predictor, not a guarantee at that point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from regmix_plugin.errors import ConfigError

DEFAULT_COVERAGE = 0.9
METHOD = "split-conformal on K-fold out-of-fold absolute residuals"


def check_coverage(coverage: float, field: str = "--coverage") -> float:
    ok = isinstance(coverage, (int, float)) and not isinstance(coverage, bool) and 0 < coverage < 1
    if not ok:
        raise ConfigError(f"{field}: {coverage!r} must be a number strictly between 0 and 1, e.g. 0.9")
    return float(coverage)


@dataclass(frozen=True)
class ConformalInterval:
    """``prediction +- half_width`` holds the truth with probability about ``coverage``."""

    half_width: float  # inf when there are too few runs for this coverage
    coverage: float
    n_calibration: int

    @classmethod
    def from_residuals(cls, residuals: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> ConformalInterval:
        coverage = check_coverage(coverage)
        scores = np.sort(np.abs(np.asarray(residuals, float)))
        scores = scores[np.isfinite(scores)]
        n = len(scores)
        k = math.ceil((n + 1) * coverage)
        return cls(float(scores[k - 1]) if 1 <= k <= n else math.inf, coverage, n)

    def bounds(self, predicted: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(predicted, float)
        return p - self.half_width, p + self.half_width

    def describe(self, predicted: float) -> dict:
        """The interval around one prediction, as written into regmix.json's provenance."""
        lo, hi = self.bounds(predicted)
        finite = math.isfinite(self.half_width)
        return {
            "coverage": self.coverage,
            "lower": float(lo) if finite else None,
            "upper": float(hi) if finite else None,
            "half_width": self.half_width if finite else None,
            "method": METHOD,
            "calibration_runs": self.n_calibration,
            **({} if finite else {"note": f"{self.n_calibration} runs are too few for {self.coverage:.0%} coverage; "
                                          "the interval is unbounded"}),
        }


def model_interval(model, coverage: float = DEFAULT_COVERAGE) -> ConformalInterval | None:
    """The interval of a FittedModel's chosen predictor, from its stored out-of-fold predictions."""
    oof = model.oof.get(model.chosen)
    if oof is None:
        return None
    return ConformalInterval.from_residuals(np.asarray(oof, float) - np.asarray(model.y, float), coverage)


def interval_text(unc: dict) -> str:
    """``(90% interval 2.81-2.95; CV RMSE 0.031)`` from regmix.json's predicted_target_uncertainty."""
    iv = unc.get("interval") or {}
    rmse = f"CV RMSE {unc['cv_rmse']:.4f}" if unc.get("cv_rmse") is not None else "no CV"
    if iv.get("lower") is None:
        return f"({rmse})"
    return f"({iv['coverage']:.0%} interval {iv['lower']:.4f} to {iv['upper']:.4f}; {rmse})"

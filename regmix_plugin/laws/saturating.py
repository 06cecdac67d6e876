"""The saturating law and its robust fit, shared by the scaling and continual-training stages.

Every law has the form

    L(z) = exp(e) + exp(beta + gamma * z)          i.e.  log L = logaddexp(e, beta + gamma * z)

- step law  L(s) = E + (s0/s)^alpha  with z = log s, gamma = -alpha <= 0, beta = alpha * log s0;
- size law  L(N) = E + (N0/N)^alpha  likewise with z = log N (non-embedding parameters);
- the 1-D mixing law of continual training L(p) = c + k * exp(t * p) with z = p, gamma = t
  (`regmix_plugin.continual.replay`).

Log-parametrisation keeps E and the power term positive without constraints. The loss is Huber on
log-residuals (as in Chinchilla's fit, delta = 1e-3) so a few noisy evaluation points do not drag the fit.
The problem is not convex in gamma; `regmix_plugin.laws.solver` profiles it over a grid of exponents and
polishes the best basins, for all series of a call at once. Several series can share gamma (one exponent
across the evaluation metrics of a run, or of a mixture across sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.laws.solver import solve_laws


class LawFitError(RegmixError):
    """Too few or unusable points for a law."""


@dataclass
class LawConfig:
    """How a law is fitted.

    huber_delta: Huber threshold on log-loss residuals (1e-3 = 0.1 % relative error, Chinchilla's value).
    min_points: a series with fewer finite points is an error (a 3-parameter law needs more than 3).
    max_iter: cap on the polishing steps (Levenberg-Marquardt) per fit.
    """

    huber_delta: float = 1e-3
    min_points: int = 4
    max_iter: int = 500

    def __post_init__(self) -> None:
        if not self.huber_delta > 0:
            raise ConfigError(f"huber_delta: {self.huber_delta} must be > 0 (try 1e-3)")
        if self.min_points < 3:
            raise ConfigError(f"min_points: {self.min_points} must be >= 3 (a law has 3 parameters)")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter: {self.max_iter} must be >= 1")


@dataclass(frozen=True)
class LawParams:
    """A fitted ``log L = logaddexp(e, beta + gamma * z)``; ``loss`` is the mean Huber objective at the optimum
    (over the series that share its gamma)."""

    e: float
    beta: float
    gamma: float
    n_points: int
    loss: float

    def predict_z(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        return np.exp(np.logaddexp(self.e, self.beta + self.gamma * z))


def clean_series(z, y, where: str, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite, positive points only; one-line error naming the series when too few are left."""
    z = np.asarray(z, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if z.shape != y.shape:
        raise LawFitError(f"{where}: {z.size} x values but {y.size} losses; give one loss per point")
    ok = np.isfinite(z) & np.isfinite(y) & (y > 0)
    if ok.sum() < min_points:
        raise LawFitError(
            f"{where}: {int(ok.sum())} usable points (finite, loss > 0); a law needs at least {min_points}, "
            "so evaluate more often or fit from an earlier step"
        )
    return z[ok], y[ok]


def fit_laws(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
    config: LawConfig,
    *,
    shared_gamma: bool = False,
    groups: Sequence[Any] | None = None,
    gamma_bounds: tuple[float | None, float | None] = (None, 0.0),
) -> list[LawParams]:
    """Fit one law per series ``(z, y)``, all in one batch; ``shared_gamma`` ties every gamma, ``groups``
    (one key per series) ties the gammas of series with equal keys.

    Series must be cleaned already (:func:`clean_series`).
    """
    if not series:
        raise LawFitError("series: nothing to fit; give at least one curve")
    if groups is None:
        groups = np.zeros(len(series), int) if shared_gamma else np.arange(len(series))
    elif len(groups) != len(series):
        raise ValueError("groups: give one group key per series")
    keys = {k: i for i, k in enumerate(dict.fromkeys(groups))}
    g = np.array([keys[k] for k in groups])
    e, beta, gamma, loss = solve_laws([(np.asarray(z, float), np.asarray(y, float)) for z, y in series], g,
                                      config.huber_delta, gamma_bounds, config.max_iter)
    return [LawParams(e=float(e[i]), beta=float(beta[i]), gamma=float(gamma[i]), n_points=int(len(series[i][0])),
                      loss=float(loss[i])) for i in range(len(series))]




@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = E + (x0 / x)^alpha = E + exp(beta - alpha * log x)``, with ``beta = alpha * log x0``.

    Stored as (E, alpha, beta) because x0 is undefined when alpha = 0 (a flat curve) while beta is not.
    ``n_points`` and ``loss`` (mean Huber objective at the optimum) describe the fit.
    """

    E: float
    alpha: float
    beta: float
    n_points: int = 0
    loss: float = 0.0

    @classmethod
    def from_params(cls, p: LawParams) -> "PowerLaw":
        return cls(E=math.exp(p.e), alpha=-p.gamma, beta=p.beta, n_points=p.n_points, loss=p.loss)

    @property
    def x0(self) -> float:
        return math.exp(self.beta / self.alpha) if self.alpha > 1e-12 and abs(self.beta / self.alpha) < 700 else math.nan

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.E + np.exp(self.beta - self.alpha * np.log(x))

    def to_dict(self) -> dict[str, float]:
        x0 = self.x0
        return {"E": self.E, "alpha": self.alpha, "beta": self.beta, "x0": x0 if math.isfinite(x0) else None,
                "n_points": self.n_points, "loss": self.loss}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PowerLaw":
        return cls(E=float(d["E"]), alpha=float(d["alpha"]), beta=float(d["beta"]),
                   n_points=int(d.get("n_points", 0)), loss=float(d.get("loss", 0.0)))


def fit_power_laws(
    curves: Mapping[str, tuple[Any, Any]], config: LawConfig | None = None, *, shared_alpha: bool = False,
    groups: Mapping[str, Any] | None = None,
) -> dict[str, PowerLaw]:
    """Fit ``L(x) = E + (x0/x)^alpha`` to each named curve ``(x, y)``, all at once. ``shared_alpha`` ties every
    exponent; ``groups`` (name -> key) ties the exponents of curves with equal keys."""
    config = config or LawConfig()
    names = list(curves)
    series = []
    for name in names:
        x, y = curves[name]
        x, y = clean_series(x, y, name, config.min_points)
        if np.any(x <= 0):
            raise LawFitError(f"{name}: x must be > 0 for a power law (drop step 0 / give positive sizes)")
        series.append((np.log(x), y))
    keys = [groups[n] for n in names] if groups is not None else None
    fitted = fit_laws(series, config, shared_gamma=shared_alpha, groups=keys, gamma_bounds=(None, 0.0))
    return {n: PowerLaw.from_params(p) for n, p in zip(names, fitted)}

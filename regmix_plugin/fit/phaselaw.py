"""Predictors of multi-phase schedules: ``phase-law`` and its control, ``averaged-exposure``.

A schedule's runs table has the concatenated phase weights ``x = [x_0 | x_1 | ...]`` (``weight/p<k>/<d>``, each
phase on its own simplex; table.py), and every predictor can fit them as they are. These two also know the
phases' ``lengths`` (shares of training, ``[0.8, 0.2]``), which `fit_model` passes from the table.

``phase-law`` (effective exposure): each phase's weights count with a learned importance ``a_k`` (``a_0 = 1``),

    E_d = sum_k a_k * len_k * x_kd,        L = c + k * (1 + sum_d s_d ((E_d + DELTA)^g - DELTA^g))^(-alpha),

the eff-law (fit/efflaw.py) on the effective exposure ``E`` instead of one mixture. ``a_k > 1``: a token seen in
phase ``k`` counts more than one seen in phase 0 (the end of training weighs more, as annealing suggests); with
every ``a_k = 1``, ``E`` is the time-averaged exposure and the law is the control's. One importance per phase
shared by all domains keeps the parameter count at eff-law's + K - 1, which 50-500 proxy runs can identify.

``averaged-exposure`` (the control): any predictor (``base``, default eff-law) on the time-averaged exposure
``sum_k len_k x_k`` only. It cannot tell schedules with the same average apart, so when it cross-validates as
well as the phase-aware predictors, the phase split carries no signal the runs show.
"""

from __future__ import annotations


import numpy as np

from regmix_plugin.fit.base import FitError, Predictor, State
from regmix_plugin.fit.efflaw import DELTA, LOG_ALPHA, LOG_G, LOG_S, best_of_starts
from regmix_plugin.fit.registry import get_predictor, register

LOG_A = (np.log(1e-2), np.log(1e2))  # a phase counts between 1/100 and 100 times phase 0


def check_lengths(lengths, n_features: int, who: str) -> np.ndarray:
    """The phases' lengths as an array; their count must divide the feature count (K phases x D domains)."""
    try:
        L = np.asarray(lengths, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise FitError(f"{who}.lengths: {lengths!r} is not a list of phase lengths, e.g. [0.8, 0.2]") from None
    if L.size < 1 or not np.all(L > 0) or abs(L.sum() - 1) > 1e-6:
        raise FitError(f"{who}.lengths: {L.tolist()} must be positive shares of training summing to 1")
    if n_features % L.size:
        raise FitError(f"{who}: {n_features} weight columns are not {L.size} phases of the same domains; fit a "
                       "schedule runs table (weight/p<k>/<domain>) or give lengths for its phases")
    return L


def averaged(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The time-averaged exposure ``sum_k len_k x_k`` of concatenated phase weights (runs x K*D -> runs x D)."""
    K = lengths.size
    return np.einsum("k,nkd->nd", lengths, X.reshape(X.shape[0], K, -1))


def _unpack(p: np.ndarray, D: int):
    c, k, alpha = np.exp(p[:3])
    s = np.exp(p[3:3 + D])
    g = float(np.exp(p[3 + D]))
    a = np.r_[1.0, np.exp(p[4 + D:])]
    return float(c), float(k), float(alpha), s, g, a


@register
class PhaseLawPredictor(Predictor):
    name = "phase-law"
    smooth = True

    def __init__(self, lengths=(1.0,), n_starts: int = 3, huber_scale: float = 0.5, max_nfev: int = 3000,
                 prior: float = 0.001, random_state: int = 0) -> None:
        self.lengths = lengths  # phase shares of training; `regmix fit` passes the table's
        self.n_starts = n_starts
        self.huber_scale = huber_scale  # Huber's delta in units of sd(y), as eff-law
        self.max_nfev = max_nfev
        self.prior = prior  # eff-law's Gaussian prior on log s_d (same weight, same reason)
        self.random_state = random_state

    def _exposure(self, X: np.ndarray, a: np.ndarray) -> np.ndarray:
        L = self.lengths_
        return np.einsum("k,nkd->nd", a * L, X.reshape(X.shape[0], L.size, -1))

    def _law(self, p: np.ndarray, X: np.ndarray):
        D = X.shape[1] // self.lengths_.size
        c, k, alpha, s, g, a = _unpack(p, D)
        E = self._exposure(X, a)
        U = (E + DELTA) ** g - DELTA**g
        S = 1.0 + U @ s
        return c + k * S ** (-alpha), (c, k, alpha, s, g, a, E, U, S)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.lengths_ = check_lengths(self.lengths, X.shape[1], self.name)
        if int(self.n_starts) < 1:
            raise FitError(f"{self.name}.n_starts: {self.n_starts!r} must be >= 1")
        if np.min(y) <= 0:
            raise FitError(f"{self.name}: the target has values <= 0; the law needs a positive target (a loss)")
        n = X.shape[0]
        K = self.lengths_.size
        D = X.shape[1] // K
        Xk = X.reshape(n, K, D)
        sd = max(float(np.std(y)), 1e-8)
        w_prior = np.sqrt(float(self.prior)) * sd
        centre = np.eye(D) - 1.0 / D
        log_delta = np.log(DELTA)

        def resid(p):
            r = self._law(p, X)[0] - y
            return np.r_[r, w_prior * (centre @ p[3:3 + D])] if w_prior > 0 else r

        def jac(p):
            _, (c, k, alpha, s, g, a, E, U, S) = self._law(p, X)
            Sa = S ** (-alpha)
            dS = -alpha * k * Sa / S
            dU_dlogg = g * ((E + DELTA) ** g * np.log(E + DELTA) - DELTA**g * log_delta)
            dU_dE = g * (E + DELTA) ** (g - 1.0)  # runs x D
            cols = [np.full(n, c), k * Sa, -alpha * k * Sa * np.log(S), dS[:, None] * U * s, dS * (dU_dlogg @ s)]
            for j in range(1, K):  # d E_d / d log a_j = a_j len_j x_jd
                dE = a[j] * self.lengths_[j] * Xk[:, j, :]
                cols.append(dS * ((dU_dE * dE) @ s))
            J = np.column_stack(cols)
            if w_prior > 0:
                P = np.zeros((D, J.shape[1]))
                P[:, 3:3 + D] = w_prior * centre
                J = np.r_[J, P]
            return J

        lo = np.r_[-np.inf, -np.inf, LOG_ALPHA[0], np.full(D, LOG_S[0]), LOG_G[0], np.full(K - 1, LOG_A[0])]
        hi = np.r_[np.inf, np.inf, LOG_ALPHA[1], np.full(D, LOG_S[1]), LOG_G[1], np.full(K - 1, LOG_A[1])]
        rng = np.random.default_rng(self.random_state)
        starts = []
        for start in range(int(self.n_starts)):
            c0 = float(np.min(y)) * (0.9 if start == 0 else rng.uniform(0.5, 0.97))
            log_s0 = np.full(D, np.log(10.0)) + (0.0 if start == 0 else rng.normal(0.0, 1.5, D))
            log_a0 = np.zeros(K - 1) if start == 0 else rng.normal(0.0, 1.0, K - 1)
            starts.append(np.r_[np.log(c0), np.log(max(float(np.max(y)) - c0, 1e-3)), np.log(0.5), log_s0, np.log(0.5),
                                log_a0])
        best = best_of_starts(resid, jac, starts, lo, hi, float(self.huber_scale) * sd, int(self.max_nfev), 1e-6)
        if best is None:
            raise FitError(f"{self.name}: every start diverged; check the target for outliers")
        self.params_ = np.asarray(best.x, dtype=float)
        self.cost_ = float(best.cost)

    @property
    def importance_(self) -> np.ndarray:
        """``a_k``: how much a token of phase k counts against one of phase 0 (``a_0 = 1``)."""
        self._check_fitted()
        return _unpack(self.params_, self.n_features_in_ // self.lengths_.size)[5]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._law(self.params_, X)[0]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d L / d x_kd at one schedule (concatenated phase weights)."""
        self._check_fitted()
        x = np.asarray(x, float)[None, :]
        _, (c, k, alpha, s, g, a, E, U, S) = self._law(self.params_, x)
        dS = -alpha * k * S[0] ** (-alpha - 1.0)
        dE = dS * s * g * (E[0] + DELTA) ** (g - 1.0)  # d L / d E_d
        return np.concatenate([dE * a[j] * self.lengths_[j] for j in range(self.lengths_.size)])

    def _get_state(self) -> State:
        return State(meta={"cost": self.cost_}, arrays={"params": self.params_, "lengths": self.lengths_})

    def _set_state(self, state: State) -> None:
        self.cost_ = float(state.meta["cost"])
        self.params_ = np.asarray(state.arrays["params"], dtype=float)
        self.lengths_ = np.asarray(state.arrays["lengths"], dtype=float)


@register
class AveragedExposurePredictor(Predictor):
    name = "averaged-exposure"
    smooth = True

    def __init__(self, lengths=(1.0,), base: str = "eff-law", base_params: dict | None = None,
                 random_state: int = 0) -> None:
        self.lengths = lengths
        self.base = base  # the predictor fitted on the averaged exposure
        self.base_params = base_params
        self.random_state = random_state

    def is_smooth(self) -> bool:
        from regmix_plugin.fit.base import is_smooth
        from regmix_plugin.fit.registry import predictor_class

        return is_smooth(self.model_) if self.is_fitted() else bool(predictor_class(self.base, "averaged-exposure.base").smooth)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.lengths_ = check_lengths(self.lengths, X.shape[1], self.name)
        if self.base in ("averaged-exposure", "auto"):
            raise FitError(f"{self.name}.base: {self.base!r} cannot be the base; name a single predictor (eff-law)")
        params = {"random_state": self.random_state, **(self.base_params or {})}
        self.model_ = get_predictor(self.base, **params).fit(averaged(X, self.lengths_), y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(averaged(X, self.lengths_))

    def gradient(self, x: np.ndarray) -> np.ndarray:
        g = getattr(self.model_, "gradient", None)
        if g is None:
            raise FitError(f"{self.name}: its base {self.base} has no gradient")
        d = g(averaged(np.asarray(x, float)[None, :], self.lengths_)[0])
        return np.concatenate([d * L for L in self.lengths_])

    def _get_state(self) -> State:
        return State(arrays={"lengths": self.lengths_}, children={"base": self.model_})

    def _set_state(self, state: State) -> None:
        self.lengths_ = np.asarray(state.arrays["lengths"], dtype=float)
        self.model_ = state.children["base"]

"""Feature maps of mixture weights shared by the smooth predictors.

Loss responds to a domain's share roughly logarithmically (doubling a small share helps much more than
doubling a large one), and 44% of RegMix's weights are exactly zero, so ``log(w + eps)`` with a small
floor, plus ``sqrt(w)`` for the curvature near zero, are the inputs that make ranking work from few runs.
"""

from __future__ import annotations

import numpy as np

FEATURE_MAPS = ("log", "sqrt", "identity", "log+sqrt")


def transform(X: np.ndarray, kind: str, eps: float) -> np.ndarray:
    if kind == "log":
        return np.log(X + eps)
    if kind == "sqrt":
        return np.sqrt(np.clip(X, 0.0, None))
    if kind == "identity":
        return X
    if kind == "log+sqrt":
        return np.hstack([np.log(X + eps), np.sqrt(np.clip(X, 0.0, None))])
    raise ValueError(kind)  # callers validate kind with check_choice first


def ridge_gcv(F: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Ridge regression with the penalty chosen by generalised cross-validation (closed form, via SVD).

    Returns ``(coef, intercept, alpha)``; features are centred, not scaled, so the penalty is uniform.
    """
    fm, ym = F.mean(axis=0), y.mean()
    Fc, yc = F - fm, y - ym
    U, s, Vt = np.linalg.svd(Fc, full_matrices=False)
    Uy = U.T @ yc
    n = len(y)
    best = (np.inf, None, None)
    for a in alphas:
        d = s / (s**2 + a)
        coef = Vt.T @ (d * Uy)
        resid = yc - Fc @ coef
        dof = np.sum(s**2 / (s**2 + a))
        gcv = float(resid @ resid) / max(n - dof, 1e-9) ** 2
        if gcv < best[0]:
            best = (gcv, coef, float(a))
    coef = best[1]
    return coef, float(ym - fm @ coef), best[2]

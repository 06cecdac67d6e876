"""Batched robust fit of saturating laws ``log L = logaddexp(e, beta + gamma * z)`` (used by
`regmix_plugin.laws.saturating.fit_laws`, the one entry point; see its docstring for the laws).

Why batched: one model size's step laws are hundreds to thousands of 3-parameter fits (100 runs x 22
evaluation sets), and choosing the law settings by held-out tails multiplies that by the number of
candidates. One scipy L-BFGS-B call per series and start cost ~0.2 s per series, nearly all of it Python
overhead; here every array operation runs over all series at once.

Method, for every series (or every group of series that share gamma):

1. **Profile over gamma.** For a fixed gamma the law ``L = E + B exp(gamma (z - z_ref))`` is linear in E and
   B, so a weighted least-squares fit on relative residuals (which approximate log-residuals) gives them in
   closed form; two re-weightings make it approximate the Huber loss. This is done on a grid of exponents
   spanning the range of ``gamma * (max z - min z)``; the grid point with the lowest *exact* objective is the
   start. The objective is not convex in gamma; a dense grid over the one nonlinear parameter finds the
   right basin where a few local starts may not.
2. **Polish.** Levenberg-Marquardt on the exact objective (Huber on log-residuals, the same objective as
   before) with iteratively re-weighted Gauss-Newton steps, a step accepted only when it lowers the
   objective. A shared gamma couples the series of a group; its step is solved through the Schur
   complement of the per-series 2 x 2 blocks, so a group costs no more than its series.
"""

from __future__ import annotations

import numpy as np

# Grid of |gamma * z-range|: 1e-3 is a nearly flat curve, 30 a curve that is all transient.
_U_GRID = np.geomspace(1e-3, 30.0, 60)
N_STARTS = 4  # local minima of the profile polished per group
PROFILE_STEPS = 4  # Gauss-Newton steps at each grid exponent
SCOUT_STEPS = 15  # steps every start gets before only the best start of each group goes on
# Elements per profile chunk (series x grid x points): bounds the memory to a few tens of MB.
_CHUNK = 2_000_000


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    m = np.minimum(np.abs(r), delta)
    return m * (np.abs(r) - 0.5 * m)  # 0.5 r^2 inside delta, delta (|r| - delta / 2) outside


def _pad(series):
    k = len(series)
    t = max(len(z) for z, _ in series)
    Z = np.zeros((k, t))
    LY = np.zeros((k, t))
    M = np.zeros((k, t))
    for i, (z, y) in enumerate(series):
        n = len(z)
        Z[i, :n] = z
        LY[i, :n] = np.log(y)
        M[i, :n] = 1.0
        if n < t:  # padding repeats a real point (weight 0) so no operation sees an odd value
            Z[i, n:] = z[-1]
            LY[i, n:] = LY[i, n - 1]
    return Z, LY, M


def _gamma_grid(lo: float | None, hi: float | None) -> np.ndarray:
    """Grid of ``u = gamma * z-range`` allowed by the bounds on gamma (whose sign the range keeps)."""
    u = []
    if lo is None or lo < 0:
        u.append(-_U_GRID[::-1])
    if hi is None or hi > 0:
        u.append(_U_GRID)
    return np.concatenate(u)


def _linear_fit(phi, Y, W, M, floor):
    """Per row: E, B >= 0 minimising sum W M ((E + B phi - Y) / Y)^2; E falls back to ``floor``, B to ~0."""
    v = W * M / (Y * Y)
    sv, sp, spp = v.sum(-1), (v * phi).sum(-1), (v * phi * phi).sum(-1)
    sy, spy = (v * Y).sum(-1), (v * phi * Y).sum(-1)
    det = sv * spp - sp * sp
    ok = det > 1e-12 * np.maximum(sv * spp, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        E = np.where(ok, (spp * sy - sp * spy) / det, sy / sv)
        B = np.where(ok, (sv * spy - sp * sy) / det, 0.0)
        low_e = E < floor  # a floor at or below 0 is outside the law: pin it and refit B alone
        E = np.where(low_e, floor, E)
        B = np.where(low_e, (spy - floor * sp) / np.maximum(spp, 1e-300), B)
        flat = ~(B > 0)  # no decreasing (or increasing) part for this exponent: a constant
        E = np.where(flat, np.maximum(sy / sv, floor), E)
    tiny = 1e-9 * floor
    B = np.where(flat, tiny, np.maximum(B, tiny))
    return E, B


def _profile(Z, LY, M, gam, zref, delta, floor):
    """Exact objective (sum of Huber terms) and (E, B) per series and grid exponent ``gam[k, j]``.

    E and B start from a weighted least-squares fit in linear space (closed form), then a few damped
    Gauss-Newton steps on the exact objective at this gamma: on noisy curves with outliers the linear fit
    alone misranked neighbouring exponents by ~10 %.
    """
    Y = np.exp(LY)[:, None, :]
    lphi = gam[:, :, None] * (Z[:, None, :] - zref[:, :, None])
    phi = np.exp(lphi)
    Mx = M[:, None, :]
    LYx = LY[:, None, :]
    W = np.ones_like(phi)
    fl = floor[:, None]
    for _ in range(2):  # least squares, then one Huber re-weighting
        E, B = _linear_fit(phi, Y, W, Mx, fl)
        r = np.log(E[..., None] + B[..., None] * phi) - LYx
        a = np.abs(r)
        W = np.where(a <= delta, 1.0, delta / np.maximum(a, 1e-300))
    e, c = np.log(E), np.log(B)
    f = (_huber(r, delta) * Mx).sum(-1)
    lam = np.full(f.shape, 1e-3)
    for _ in range(PROFILE_STEPS):
        sg = 1.0 / (1.0 + np.exp(c - e)[..., None] * phi)  # d log L / d log E = E / L
        a = np.abs(r)
        w = np.minimum(1.0, delta / np.maximum(a, 1e-300)) * Mx
        psi = np.clip(r, -delta, delta) * Mx
        ws, ps = w * sg, psi * sg
        s11 = (ws * sg).sum(-1)
        s1 = ws.sum(-1)
        a11, a12, a22 = s11, s1 - s11, w.sum(-1) - 2 * s1 + s11
        g1 = ps.sum(-1)
        g2 = psi.sum(-1) - g1
        ridge = 1e-12 * (a11 + a22) + 1e-300
        a11, a22 = a11 * (1 + lam) + ridge, a22 * (1 + lam) + ridge
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            det = a11 * a22 - a12 * a12
            ne = e - (a22 * g1 - a12 * g2) / det
            nc = c - (a11 * g2 - a12 * g1) / det
            rn = np.log(np.exp(ne)[..., None] + np.exp(nc)[..., None] * phi) - LYx
            fn = (_huber(rn, delta) * Mx).sum(-1)
        good = np.isfinite(fn) & (fn <= f)
        e, c, f = np.where(good, ne, e), np.where(good, nc, c), np.where(good, fn, f)
        r = np.where(good[..., None], rn, r)
        lam = np.where(good, lam / 3, lam * 4)
    return f, np.exp(e), np.exp(c)


def solve_laws(series, groups: np.ndarray, delta: float, gamma_bounds, max_iter: int):
    """Fit every series ``(z, y)`` (cleaned: finite, y > 0); series with equal ``groups`` share gamma.

    Returns arrays ``e, beta, gamma`` (one per series) and ``loss``: the mean Huber objective of each
    series' group at the optimum.
    """
    lo, hi = gamma_bounds
    Z, LY, M = _pad(series)
    k = len(series)
    groups = np.asarray(groups)
    _, g = np.unique(groups, return_inverse=True)
    n_groups = int(g.max()) + 1
    big = np.where(M > 0, Z, np.inf).min(1), np.where(M > 0, Z, -np.inf).max(1)
    gzmin = np.full(n_groups, np.inf)
    gzmax = np.full(n_groups, -np.inf)
    np.minimum.at(gzmin, g, big[0])
    np.maximum.at(gzmax, g, big[1])
    span = np.maximum(gzmax - gzmin, 1e-9)
    u = _gamma_grid(lo, hi)
    ggam = u[None, :] / span[:, None]  # (groups, grid)
    ggam = np.clip(ggam, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    # Reference z where the exponent is <= 0 over the data: phi in (0, 1], well conditioned.
    gref = np.where(ggam < 0, gzmin[:, None], gzmax[:, None])
    floor = 1e-3 * np.exp(np.where(M > 0, LY, np.inf).min(1))  # the current starts' smallest floor

    # 1. profile objective per series and grid point, in chunks of series.
    obj = np.empty((k, len(u)))
    per = max(1, _CHUNK // (len(u) * Z.shape[1]))
    for s in range(0, k, per):
        sl = slice(s, s + per)
        obj[sl] = _profile(Z[sl], LY[sl], M[sl], ggam[g[sl]], gref[g[sl]], delta, floor[sl])[0]
    gobj = np.zeros((n_groups, len(u)))
    np.add.at(gobj, g, obj)
    # Starts per group: the N_STARTS lowest local minima of the profile (with a Huber loss the profile is
    # not smooth, and neighbouring basins can be one grid step apart); groups with fewer local minima
    # repeat their best one.
    pad = np.pad(gobj, ((0, 0), (1, 1)), constant_values=np.inf)
    local = (gobj <= pad[:, :-2]) & (gobj <= pad[:, 2:])
    order = np.argsort(np.where(local, gobj, np.inf), axis=1, kind="stable")[:, :N_STARTS]
    n_local = local.sum(1)
    order = np.where(np.arange(N_STARTS)[None, :] < n_local[:, None], order, order[:, :1])
    rows = np.arange(n_groups)
    e0, b0, g0 = [], [], []
    for j in order.T:
        gam, ref = ggam[rows, j], gref[rows, j]
        _, E, B = _profile(Z, LY, M, gam[g][:, None], ref[g][:, None], delta, floor)
        e0.append(np.log(E[:, 0]))
        b0.append(np.log(B[:, 0]) - gam[g] * ref[g])
        g0.append(gam)

    # 2. All starts polished as one batch for a few steps (start i's groups are numbered i * n_groups +
    # group), then only the lowest start of each group to convergence: a start in the wrong basin costs
    # hundreds of slow steps and is rarely the winner after a few.
    rep = lambda a: np.concatenate([a] * N_STARTS)  # noqa: E731
    e, beta, gamma, f = _polish(rep(Z), rep(LY), rep(M), np.concatenate([g + i * n_groups for i in range(N_STARTS)]),
                                np.concatenate(e0), np.concatenate(b0), np.concatenate(g0),
                                delta, (lo, hi), min(SCOUT_STEPS, max_iter))
    win = np.argmin(f.reshape(N_STARTS, n_groups), axis=0)
    e = e.reshape(N_STARTS, k)[win[g], np.arange(k)]
    beta = beta.reshape(N_STARTS, k)[win[g], np.arange(k)]
    gamma = gamma.reshape(N_STARTS, n_groups)[win, rows]
    e, beta, gamma, f = _polish(Z, LY, M, g, e, beta, gamma, delta, (lo, hi), max_iter)
    n_pts = np.bincount(g, weights=M.sum(1), minlength=n_groups)
    return e, beta, gamma[g], (f / np.maximum(n_pts, 1))[g]


def _polish(Z, LY, M, g, e, beta, gamma, delta, gamma_bounds, max_iter):
    """Levenberg-Marquardt on the exact objective; returns e, beta (per series), gamma and f (per group).

    Each step solves the IRLS Gauss-Newton system (J' W J + lambda diag) step = -J' psi; it is kept only
    where it lowers the group's objective (then lambda shrinks), else lambda grows. Groups stop when a step
    gains less than 1e-9 of the objective; later iterations work on the other groups only.
    """
    n_groups = int(g.max()) + 1
    lo_b = -np.inf if gamma_bounds[0] is None else gamma_bounds[0]
    hi_b = np.inf if gamma_bounds[1] is None else gamma_bounds[1]
    e, beta, gamma = e.copy(), beta.copy(), gamma.copy()

    def objective(gi, e, beta, gamma, Z, LY, M, n):
        pred = np.logaddexp(e[:, None], beta[:, None] + gamma[gi][:, None] * Z)
        r = (pred - LY) * M
        return np.bincount(gi, weights=(_huber(r, delta) * M).sum(1), minlength=n), pred, r

    f_all, _, _ = objective(g, e, beta, gamma, Z, LY, M, n_groups)
    f_all = f_all.copy()
    lam_all = np.full(n_groups, 1e-3)
    act = np.arange(n_groups)  # active groups
    for it in range(max_iter):
        if it == 0 or len(act) < n_act:
            # Compact to the series of active groups, renumbered 0..len(act)-1.
            n_act = len(act)
            remap = np.full(n_groups, -1)
            remap[act] = np.arange(n_act)
            rows = np.flatnonzero(remap[g] >= 0)
            gi = remap[g[rows]]
            z, ly, m = Z[rows], LY[rows], M[rows]
            ee, bb, gm = e[rows], beta[rows], gamma[act]
            f, lam = f_all[act], lam_all[act]
            _, pred, r = objective(gi, ee, bb, gm, z, ly, m, n_act)
        s = np.exp(ee[:, None] - pred)  # d pred / d e; 1 - s = d pred / d beta
        je, jb = s * m, (1.0 - s) * m
        jg = jb * z
        w = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300)) * m
        psi = np.clip(r, -delta, delta) * m
        wje, wjb = w * je, w * jb
        a11, a12, a22 = (wje * je).sum(1), (wje * jb).sum(1), (wjb * jb).sum(1)
        c1, c2, d = (wje * jg).sum(1), (wjb * jg).sum(1), (wjb * jg * z).sum(1)
        g1, g2, gg = (psi * je).sum(1), (psi * jb).sum(1), (psi * jg).sum(1)
        lk = lam[gi]
        ridge = 1e-12 * (a11 + a22) + 1e-300
        a11d, a22d = a11 * (1 + lk) + ridge, a22 * (1 + lk) + ridge
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            det = a11d * a22d - a12 * a12
            # A^-1 applied to (g1, g2) and to (c1, c2), per series; gamma's step by the Schur complement.
            ig1, ig2 = (a22d * g1 - a12 * g2) / det, (a11d * g2 - a12 * g1) / det
            ic1, ic2 = (a22d * c1 - a12 * c2) / det, (a11d * c2 - a12 * c1) / det
            D = np.bincount(gi, weights=d, minlength=n_act) * (1 + lam) + 1e-300
            num = np.bincount(gi, weights=gg - (c1 * ig1 + c2 * ig2), minlength=n_act)
            den = D - np.bincount(gi, weights=c1 * ic1 + c2 * ic2, minlength=n_act)
            dgam = -num / np.where(den > 0, den, np.inf)
            new_gm = np.clip(gm + np.nan_to_num(dgam), lo_b, hi_b)
            dg = (new_gm - gm)[gi]
            ne = ee - (ig1 + ic1 * dg)
            nb = bb - (ig2 + ic2 * dg)
            fn, pn, rn = objective(gi, ne, nb, new_gm, z, ly, m, n_act)
        good = np.isfinite(fn) & (fn <= f)
        gs = good[gi]
        rel = (f - np.where(good, fn, f)) / np.maximum(f, 1e-300)
        ee, bb = np.where(gs, ne, ee), np.where(gs, nb, bb)
        gm = np.where(good, new_gm, gm)
        pred = np.where(gs[:, None], pn, pred)
        r = np.where(gs[:, None], rn, r)
        f = np.where(good, fn, f)
        lam = np.where(good, np.maximum(lam / 3, 1e-12), lam * 4)
        stop = (good & (rel < 1e-9)) | (lam > 1e10)
        if stop.any() or it == max_iter - 1:
            e[rows], beta[rows], gamma[act], f_all[act], lam_all[act] = ee, bb, gm, f, lam
            act = act[~stop]
            if not len(act):
                break
    return e, beta, gamma, f_all

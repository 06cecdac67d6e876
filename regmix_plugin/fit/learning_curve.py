"""How many runs? CV quality at 50 %, 75 % and 100 % of the training runs, and what twice the runs would give.

``regmix fit`` scores the chosen predictor by K-fold CV on random subsets of its training runs (the same
predictor, the same K; two random subsets per point, more when `auto` scores more partitions) and fits a power law to what is
left to gain, ``100 - rho(n) = a * n^(-b)``, through the points: the projection at ``2n`` is
``100 - a * (2n)^(-b)``. A curve that does not rise gives no gain. How well this projects is measured in
bench/learning_curve.py (BENCHMARKS.md, "How many runs?"): from the first k runs, the projected CV at 2k
against the CV `regmix fit` reports on 2k runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FRACTIONS = (0.5, 0.75)
# A point needs folds of at least 2 runs, and enough runs that a law can be fitted on each fold's training rows.
MIN_RUNS = 10


def learning_curve(score: Callable[[np.ndarray, int], float | None], n: int, full: float | None, n_splits: int,
                   subsets: int, seed: int = 0, full_partitions: int = 1, n_domains: int = 0) -> dict:
    """``score(rows, partition_seed)``: the CV score (Spearman x100) of the chosen predictor on ``rows`` of the
    training runs, or None when it cannot be scored there. ``full``: its score on all ``n`` runs.

    A point whose folds would train on fewer runs than there are domains (``n_domains``) is left out and
    listed in ``skipped``: a law is underdetermined there, its CV says little (16 RegMix runs over 17 domains
    scored 18 on a split where 32 scored 96), and its fits crawl (an eff-law fit on 13 runs x 17 domains takes
    2-3 s against 0.2-0.4 s on 19; with them `regmix fit` on 32 DCLM runs x 24 domains took 725 s instead of 41)."""
    points, skipped = [], []
    for f in FRACTIONS:
        m = int(round(f * n))
        if m < max(MIN_RUNS, 2 * n_splits):
            skipped.append({"fraction": f, "runs": m, "why": f"fewer than {max(MIN_RUNS, 2 * n_splits)} runs"})
            continue
        if m - int(np.ceil(m / n_splits)) < n_domains:
            skipped.append({"fraction": f, "runs": m, "why": f"its folds train on fewer runs than the {n_domains} domains"})
            continue
        vals = []
        for s in range(subsets):
            rows = np.sort(np.random.default_rng(seed + 7919 * (s + 1) + m).permutation(n)[:m])
            v = score(rows, seed + s)
            if v is not None and np.isfinite(v):
                vals.append(float(v))
        if vals:
            points.append({"fraction": f, "runs": m, "spearman": round(float(np.mean(vals)), 4), "subsets": len(vals)})
    if full is not None:
        points.append({"fraction": 1.0, "runs": n, "spearman": round(float(full), 4), "subsets": full_partitions})
    return {"points": points, "skipped": skipped, **project(points, 2 * n)}


def project(points: list[dict], n_target: int) -> dict:
    """``100 - rho = a n^-b`` fitted by least squares in logs through the points (3 or more); the CV projected
    at ``n_target`` runs and the gain over the last point (0 where the curve does not rise)."""
    # Three points at least: through two, the exponent is whatever their noise makes it (32 RegMix runs with
    # the 50 % point left out: 70.4 at 24 runs, 96.3 at 32, "projected" 100.0 at 64).
    if len(points) < 3 or points[-1]["fraction"] != 1.0:
        return {"projected_runs": n_target, "projected_spearman": None, "projected_gain": None}
    n = np.array([p["runs"] for p in points], float)
    gap = np.clip(100.0 - np.array([p["spearman"] for p in points], float), 1e-3, None)
    b, log_a = np.polyfit(np.log(n), np.log(gap), 1)
    b = -b
    last = float(points[-1]["spearman"])
    if not np.isfinite(b) or b <= 0:
        return {"projected_runs": n_target, "projected_spearman": round(last, 4), "projected_gain": 0.0, "exponent": 0.0}
    # Anchored at the last (most reliable) point: only the exponent comes from the curve.
    proj = 100.0 - (100.0 - last) * (n_target / n[-1]) ** (-b)
    return {"projected_runs": n_target, "projected_spearman": round(float(proj), 4),
            "projected_gain": round(float(proj - last), 4), "exponent": round(float(b), 4)}


def curve_text(lc: dict, name: str, folds: int) -> str:
    """``learning curve (5-fold CV spearman of eff-law): 16 runs 85.1, 24 runs 88.0, 32 runs 90.2; projected
    with 64 runs: 93.1 (+2.9)``; empty without points."""
    if not lc or not lc.get("points"):
        return ""
    pts = ", ".join(f"{p['runs']} runs {p['spearman']:.1f}" for p in lc["points"])
    text = f"learning curve ({folds}-fold CV spearman of {name}): {pts}"
    if lc.get("skipped"):
        text += " (not scored: " + "; ".join(f"{p['runs']} runs, {p['why']}" for p in lc["skipped"]) + ")"
    if lc.get("projected_spearman") is not None:
        text += (f"; projected with {lc['projected_runs']} runs: {lc['projected_spearman']:.1f} "
                 f"({lc['projected_gain']:+.1f})")
    return text

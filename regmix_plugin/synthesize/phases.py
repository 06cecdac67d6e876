"""Proxy schedules: RegMix's sampler drawn once per phase, with caps counted over the whole schedule.

A candidate is K mixtures over the base mixture's domains and where each phase begins (``cfg.phases``, fractions
of training). Each phase is drawn like one RegMix mixture (sampler.py: Dirichlet around the tempered prior at a
random strength, floors, zeroing, rounding to multiples of ``minimum``), either

- ``independent``: every phase its own draw around the prior, or
- ``anchored``: phase 0 around the prior and each later phase ``Dir(anchor_strength * D * m)`` around the phase
  before it (``m``: that phase mixed 9:1 with the prior, so a domain it zeroed can come back), which samples the
  "small change for the last part of training" schedules that teams actually run more densely.

Caps are counted over the *whole* schedule: a domain used in two phases draws on its tokens once, so the bound
is on its time-averaged exposure ``sum_k length_k * w_kd`` (``max_usage`` x its token share and, with
``target_tokens``, ``tokens_d * max_epochs / target_tokens``), not on each phase's weight; a phase alone may
give a small domain far more than its share (that is what an annealing phase does). Floors (``min_weight``,
``nonzero``) hold in every phase.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from regmix_plugin.synthesize.config import SynthConfig
from regmix_plugin.synthesize.sampler import Plan, _dirichlet_batch, keep_distinct, postprocess, too_few

ANCHOR_PRIOR_SHARE = 0.1  # anchored draws centre on 0.9 * previous phase + 0.1 * prior


def phase_lengths(boundaries: list[float]) -> np.ndarray:
    """Share of training of each phase from where phases 1.. begin: ``[0.8] -> [0.8, 0.2]``."""
    edges = np.r_[0.0, np.asarray(boundaries, dtype=float), 1.0]
    return np.diff(edges)


@dataclass
class ScheduleDraws:
    weights: np.ndarray  # (n, K, D), each phase's row sums to 1
    heldout: np.ndarray  # (heldout, K, D)
    stats: dict[str, int]


def _anchored(rng: np.random.Generator, prev: np.ndarray, p: Plan, strength: float) -> np.ndarray:
    centre = (1 - ANCHOR_PRIOR_SHARE) * prev + ANCHOR_PRIOR_SHARE * p.prior[None, :]
    g = rng.gamma(np.clip(strength * len(p.names) * centre, 1e-3, None))
    g = np.where(g.sum(axis=1, keepdims=True) > 0, g, centre)
    return g / g.sum(axis=1, keepdims=True)


def synthesize_schedules(cfg: SynthConfig, p: Plan) -> ScheduleDraws:
    """``cfg.n + cfg.heldout`` distinct schedules (deterministic in ``cfg.seed``)."""
    K = len(cfg.phases) + 1
    lengths = phase_lengths(cfg.phases)
    units = round(1 / cfg.minimum)
    # Per phase only the floors bind; the caps bind the schedule's averaged exposure below.
    per_phase = dataclasses.replace(p, upper=np.ones(len(p.names)))
    rng = np.random.default_rng(cfg.seed)
    want = cfg.n + cfg.heldout
    budget = cfg.max_candidates or 100 * want
    seen: set[bytes] = set()
    kept: list[np.ndarray] = []
    stats = {"candidates": 0, "rejected": 0, "duplicates": 0}
    while len(kept) < want and stats["candidates"] < budget:
        counts, ok = [], np.ones(256, dtype=bool)
        for k in range(K):
            if k == 0 or cfg.phase_mode == "independent":
                raw = _dirichlet_batch(rng, p, 256)
            else:
                raw = _anchored(rng, counts[-1] / units, p, float(cfg.anchor_strength))
            c, good = postprocess(raw, cfg, per_phase)
            counts.append(c)
            ok &= good
        stack = np.stack(counts, axis=1)  # (batch, K, D) integer units
        exposure = np.einsum("k,bkd->bd", lengths, stack / units)
        ok &= (exposure <= p.upper + 1e-9).all(axis=1)
        keep_distinct(stack, ok, kept, seen, stats, budget, want)
    if len(kept) < want:
        raise too_few(len(kept), budget, want, "schedules")
    w = np.stack(kept) / units
    return ScheduleDraws(w[: cfg.n], w[cfg.n:], stats)

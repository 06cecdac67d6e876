"""The next round of proxy mixtures, drawn where a fitted model predicts the best target (`regmix synthesize --around`).

CLIMB's iterative bootstrapping, with this project's predictors and the sampler's constraints:

1. a candidate pool through the sampler itself (synthesize/sampler.py: its prior, strengths, floors, caps,
   ``minimum`` and rounding, so every candidate is a mixture the first round could have drawn): half of it
   around the prior, as RegMix's and CLIMB's pools are, half around the pool's predicted best mixture
   (Dirichlet concentrations 20, 60 and 200 times the domain count on it), so that the region the model
   prefers is sampled densely; candidates equal to a run the model was fitted on (after rounding) are dropped;
2. every candidate is predicted; the best ``max(4 n, 64)`` by the target's direction are the top pool;
3. ``n`` mixtures are taken from the top pool: the predicted best first, then, one at a time, the candidate
   farthest (L1) from those taken (a round of near-copies would teach the next fit nothing; CLIMB picks at
   random from its top pool for the same reason);
4. when the predictor can say how uncertain it is (``predict_with_std``: the GP), ``explore`` of the ``n``
   (default a quarter) are instead the candidates with the largest predictive standard deviation among the
   best tenth of the pool: close to the optimum, and where the model knows least.

The decisions and the alternatives are DECISIONS 70.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Mixture
from regmix_plugin.synthesize.config import SynthConfig
from regmix_plugin.synthesize.sampler import Plan, _dirichlet_batch, plan, postprocess

LOCAL_CONCENTRATIONS = (20.0, 60.0, 200.0)  # times the number of domains


@dataclass
class Round:
    names: list[str]
    weights: np.ndarray  # (n, d) in ``names`` order
    predicted: np.ndarray
    std: np.ndarray | None
    why: list[str]  # "best predicted", "spread over the top pool", "most uncertain near the top"
    pool: int


def _accepted(raw: np.ndarray, cfg: SynthConfig, p: Plan) -> np.ndarray:
    k, ok = postprocess(raw, cfg, p)
    return k[ok]


def _local_batch(rng: np.random.Generator, centre: np.ndarray, size: int) -> np.ndarray:
    d = len(centre)
    conc = rng.choice(LOCAL_CONCENTRATIONS, size=size) * d
    alpha = np.clip(centre, 1e-3, None)[None, :] * conc[:, None]
    g = rng.gamma(alpha)
    return g / g.sum(axis=1, keepdims=True)


def around(model, cfg: SynthConfig, base: Mixture, n: int, pool: int = 20_000, explore: float = 0.25,
           seed: int | None = None) -> Round:
    """``n`` mixtures over ``base``'s domains near the best predicted target of ``model`` (a FittedModel)."""
    if not isinstance(n, int) or n < 1:
        raise RegmixError(f"--n: {n!r} must be an integer >= 1")
    if not isinstance(pool, int) or pool < 4 * n:
        raise RegmixError(f"--pool: {pool!r} must be an integer >= 4 * n ({4 * n})")
    if not 0 <= explore < 1:
        raise RegmixError(f"--explore: {explore!r} must be in [0, 1)")
    names = base.names
    if sorted(names) != sorted(model.domains):
        extra = sorted(set(names) ^ set(model.domains))
        raise RegmixError(f"--around: the model was fit on {', '.join(model.domains)} but the base mixture has "
                          f"{', '.join(names)} (differs in {extra[0]!r}); give the base mixture of the same study")
    order = [names.index(d) for d in model.domains]  # model column j = base domain order[j]
    p = plan(cfg, base)
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    units = round(1 / cfg.minimum)
    sign = model.target.sign

    def score(K: np.ndarray) -> np.ndarray:
        return sign * np.asarray(model.predictor.predict((K / units)[:, order]), float)

    seen = {tuple(r) for r in np.rint(_reorder_back(model.X, order) * units).astype(np.int64)}
    found: dict[tuple, None] = {}
    draws = 0
    while len(found) < pool // 2 and draws < 50 * pool:
        batch = _accepted(_dirichlet_batch(rng, p, 2048), cfg, p)
        draws += 2048
        found.update((tuple(r), None) for r in batch if tuple(r) not in seen)
    if not found:
        raise RegmixError("synthesize --around: no candidate passed the sampler's caps; raise max_usage/max_epochs "
                          "or lower minimum")
    K = np.array(list(found), dtype=np.int64)
    centre = (K[int(np.argmin(score(K)))] / units)
    tries = 0
    while len(found) < pool and tries < 50:
        batch = _accepted(_local_batch(rng, centre, 2048), cfg, p)
        found.update((tuple(r), None) for r in batch if tuple(r) not in seen)
        tries += 1
    K = np.array(list(found), dtype=np.int64)
    W = K / units
    s = score(K)
    if len(W) < n:
        raise RegmixError(f"synthesize --around: only {len(W)} distinct new mixtures pass the caps, {n} asked; ask "
                          "for fewer or loosen the caps")
    ranked = np.argsort(s, kind="stable")
    top = ranked[: max(4 * n, 64)]
    with_std = getattr(model.predictor, "predict_with_std", None)
    n_explore = int(math.floor(explore * n)) if callable(with_std) and n > 1 else 0
    chosen: list[int] = [int(top[0])]
    why = ["best predicted"]
    while len(chosen) < n - n_explore:
        dist = np.abs(W[top][:, None, :] - W[chosen][None, :, :]).sum(axis=2).min(axis=1)
        chosen.append(int(top[int(np.argmax(dist))]))
        why.append("spread over the top pool")
    std = None
    if callable(with_std):
        std = np.asarray(with_std(W[:, order])[1], float)
        near = ranked[: max(len(W) // 10, n)]
        for i in near[np.argsort(-std[near], kind="stable")]:
            if len(chosen) >= n:
                break
            if int(i) not in chosen:
                chosen.append(int(i))
                why.append("most uncertain near the top")
    sel = np.array(chosen)
    return Round(names, W[sel], sign * s[sel], std[sel] if std is not None else None, why, len(W))


def _reorder_back(X: np.ndarray, order: list[int]) -> np.ndarray:
    """The model's run weights (model column order) in the base mixture's order."""
    out = np.zeros_like(np.asarray(X, float))
    out[:, order] = X
    return out


def write_round(cfg: SynthConfig, base: Mixture, out_dir, model, model_path: str, n: int, pool: int = 20_000,
                explore: float = 0.25, round_k: int = 2, overwrite: bool = False) -> dict:
    """Draw a round with :func:`around` and write it as a synthesis folder the sweep reads (``mixtures:``):
    ``r<K>_n0001.json``... (ids that do not collide with round 1's ``n0001``), ``weights.csv``, ``manifest.json``."""
    from pathlib import Path

    from regmix_plugin import __version__
    from regmix_plugin.io import atomic_write_json
    from regmix_plugin.synthesize.sampler import MANIFEST, write_mixture_files

    if not isinstance(round_k, int) or round_k < 1:
        raise RegmixError(f"--round: {round_k!r} must be an integer >= 1")
    out = Path(out_dir)
    existing = sorted(out.glob("*.json"))
    if existing and not overwrite:
        raise RegmixError(f"--out {out}: already holds mixtures ({existing[0].name}); pick a new folder or pass --overwrite")
    r = around(model, cfg, base, n, pool, explore)
    for f in existing:
        f.unlink()
    prov = {"tool": "regmix synthesize --around", "version": __version__, "model": str(model_path),
            "target": model.target.expr, "direction": model.target.direction, "predictor": model.chosen,
            "round": round_k, "seed": cfg.seed, "config_digest": cfg.digest()}
    per_row = [{"predicted_target": float(r.predicted[i]), "why": r.why[i],
                **({"predictive_std": float(r.std[i])} if r.std is not None else {})} for i in range(len(r.why))]
    entries = write_mixture_files(out, base, r.names, [("train", f"r{round_k}_n", out, r.weights)], prov, per_row)
    manifest = {"version": 1, "tool": "regmix synthesize --around", "regmix_version": __version__,
                "config": {**__import__("dataclasses").asdict(cfg), "n": n}, "config_digest": cfg.digest(),
                "around": {"model": str(model_path), "target": model.target.expr, "direction": model.target.direction,
                           "predictor": model.chosen, "pool": r.pool, "explore": explore, "round": round_k},
                "domains": r.names, "mixtures": entries}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest

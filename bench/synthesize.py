#!/usr/bin/env python
"""Coverage of the simplex by synthesized proxy mixtures: RegMix's Dirichlet sampler vs the fixes.

For each setting and seed we draw ``--n`` mixtures and measure (see ``regmix_plugin.synthesize.sampler.coverage``):
``nn_mean``/``nn_min`` (L1 distance to the nearest other mixture: larger = less clumping), ``fill_mean``/
``fill_max`` (L1 distance from reference points to the nearest mixture: smaller = fewer holes), and the
fraction of mixtures that give a domain weight 0 (worst domain, and the rarest domain). Two reference sets:
``target`` (a large independent draw from plain RegMix sampling with the same prior: how well n mixtures
represent the distribution they sample; for the ``flat`` settings, whose target is Dir(1), the uniform set)
and ``uniform`` (Dir(1) on the simplex). Medians over seeds.

    .venv/bin/python bench/synthesize.py --out bench_out/synthesize
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from regmix_plugin.mixture import Mixture
from regmix_plugin.synthesize.sampler import SynthConfig, coverage, sample_reference, synthesize

SETTINGS = {
    "regmix (dirichlet)": {},
    "dirichlet + nonzero=all": {"nonzero": "all"},
    "dirichlet + min_weight=0.002": {"min_weight": 0.002},
    "sobol": {"sampler": "sobol"},
    "sobol + nonzero=all": {"sampler": "sobol", "nonzero": "all"},
}
# Flat prior, strength = number of domains: Dir(1), uniform on the simplex, where space-filling matters most.
FLAT = {"prior": "uniform", "temperature": 1.0, "max_usage": None}


def skewed_base(d: int) -> Mixture:
    # Token counts spread log-uniformly over three orders of magnitude, like The Pile's 17 domains.
    tokens = np.round(np.logspace(6, 3, d)).astype(int)
    return Mixture.from_dict({"version": 1, "domains": [
        {"name": f"d{i:02d}", "weight": float(t), "prefixes": [f"d{i:02d}/train"], "tokens": int(t)}
        for i, t in enumerate(tokens)]})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=512, help="mixtures per sweep (RegMix used 512)")
    ap.add_argument("--domains", type=int, default=17)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--reference", type=int, default=4000)
    args = ap.parse_args()

    base = skewed_base(args.domains)
    target = synthesize(SynthConfig(n=args.reference, heldout=0, seed=10_000), base).weights
    uniform = sample_reference(np.ones(args.domains), args.reference, seed=1)
    results = {}
    flat = {**FLAT, "min_strength": float(args.domains), "max_strength": float(args.domains)}
    settings = {**SETTINGS, "flat dirichlet": flat, "flat sobol": {**flat, "sampler": "sobol"}}
    for name, extra in settings.items():
        per_seed = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            res = synthesize(SynthConfig(n=args.n, heldout=0, seed=seed, **extra), base)
            secs = time.perf_counter() - t0
            cov_t = coverage(res.weights, uniform if name.startswith("flat") else target)
            cov_u = coverage(res.weights, uniform)
            per_seed.append({
                "seconds": secs, "nn_mean": cov_t["nn_mean"], "nn_min": cov_t["nn_min"],
                "fill_mean_target": cov_t["fill_mean"], "fill_max_target": cov_t["fill_max"],
                "fill_mean_uniform": cov_u["fill_mean"], "zero_frac_max": cov_t["zero_frac_max"],
                "zero_frac_rarest": float((res.weights[:, -1] <= 0).mean()),
                "rejected_frac": res.stats["rejected"] / res.stats["candidates"],
            })
        results[name] = {k: float(np.median([s[k] for s in per_seed])) for k in per_seed[0]}
        results[name]["per_seed"] = per_seed

    cols = ["nn_mean", "nn_min", "fill_mean_target", "fill_max_target", "fill_mean_uniform", "zero_frac_max",
            "zero_frac_rarest", "rejected_frac", "seconds"]
    print(f"n={args.n} mixtures over {args.domains} domains (token counts 1e6..1e3), median of {args.seeds} seeds\n")
    print("| setting | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthesize.json").write_text(json.dumps(
        {"n": args.n, "domains": args.domains, "seeds": args.seeds, "reference": args.reference,
         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

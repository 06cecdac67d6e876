"""From a fitted model (and constraints) to a regmix.json with provenance: the library behind `regmix optimize`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.model import FittedModel
from regmix_plugin.mixture import Mixture
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.optimize.search import SearchConfig, SearchResult, search


@dataclass
class OptimizeOutcome:
    mixture: Mixture
    result: SearchResult
    prior: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    baselines: dict[str, dict[str, Any]]
    seconds: float


def domain_tokens(base: Mixture | None) -> dict[str, float]:
    """Available training tokens per domain: the base mixture's ``tokens``, else counted from its .idx files."""
    if base is None:
        return {}
    out: dict[str, float] = {}
    for d in base.domains:
        if d.tokens is not None:
            out[d.name] = float(d.tokens)
            continue
        from regmix_plugin.data.indexed import index_stats

        try:
            out[d.name] = float(sum(index_stats(base.resolve(p), f"{d.name}.prefixes").tokens for p in d.prefixes))
        except RegmixError:
            continue  # unknown here; Constraints.bounds names the domain if a token cap needs it
    return out


def _prior(model: FittedModel, base: Mixture | None) -> tuple[np.ndarray, str]:
    if base is None:
        return np.array([model.prior[d] for d in model.domains]), model.prior_source
    missing = [d for d in model.domains if d not in base.names]
    if missing:
        raise RegmixError(f"--base-mixture: no domain {missing[0]!r}; it must name every domain the model was fit on")
    return np.array([base.weight_of(d) for d in model.domains]), "the --base-mixture weights"


def optimize(
    model: FittedModel, constraints: Constraints, cfg: SearchConfig, base: Mixture | None = None, name: str = "regmix-opt"
) -> OptimizeOutcome:
    t0 = time.perf_counter()
    prior, prior_source = _prior(model, base)
    if constraints.prior_pull:
        cfg.pull_kind = constraints.prior_pull.get("kind", "kl")
        cfg.pull_strength = float(constraints.prior_pull.get("strength", 0.0))
    lo, hi, source = constraints.bounds(model.domains, domain_tokens(base))
    res = search(model.predictor, model.domains, prior, lo, hi, cfg, source)
    seconds = time.perf_counter() - t0

    pred = model.predictor.predict
    D = len(model.domains)
    baselines = {
        "prior": {"predicted": float(pred(prior[None, :])[0])},
        "uniform": {"predicted": float(pred(np.full((1, D), 1.0 / D))[0])},
        "best_proxy_run": {
            "run_id": model.best_run["run_id"],
            "actual": model.best_run["target"],
            "predicted": float(pred(np.array([[model.best_run["weights"][d] for d in model.domains]]))[0]),
        },
    }
    oof = model.oof.get(model.chosen)
    rmse = float(np.sqrt(np.mean((oof - model.y) ** 2))) if oof is not None else None
    uncertainty: dict[str, Any] = {"cv_rmse": rmse, "meaning": "RMSE of out-of-fold predictions on the proxy runs"}
    with_std = getattr(model.predictor, "predict_with_std", None)
    if callable(with_std):  # a GP also knows how far the chosen mixture is from the runs it saw
        uncertainty["predictive_std"] = float(with_std(res.weights[None, :])[1][0])
    weights = {d: float(w) for d, w in zip(model.domains, res.weights)}
    provenance = {
        "tool": "regmix optimize",
        "predictor": model.chosen,
        "predictor_reason": model.reason,
        "target": model.target.expr,
        "cv": model.cv,
        "cv_spearman": model.cv_score("spearman"),
        "predicted_target": res.predicted,
        "predicted_target_uncertainty": uncertainty,
        "baselines": baselines,
        "search": {"mode": res.mode, "evaluations": res.evaluations, "seconds": round(seconds, 3),
                   "n_samples": cfg.n_samples, "top_k": cfg.top_k, "seed": cfg.seed},
        "constraints": constraints.to_dict(),
        "active_constraints": res.active,
        "prior": {d: float(p) for d, p in zip(model.domains, prior)},
        "prior_source": prior_source,
        "n_runs": model.n_runs,
    }
    if base is not None:
        mix = Mixture.from_weights(weights, template=base, name=name)
    else:
        mix = Mixture.from_weights(weights, prefixes={d: [d] for d in model.domains}, name=name)
        provenance["prefixes_note"] = (
            "no --base-mixture given: each domain's prefix is its name; replace them with Megatron data "
            "prefixes (or rerun with --base-mixture natural.json) before training"
        )
    mix.with_provenance(**provenance)
    return OptimizeOutcome(mix, res, prior, lo, hi, baselines, seconds)

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
from regmix_plugin.optimize.uncertainty import DEFAULT_COVERAGE, ConformalInterval, model_interval


@dataclass
class OptimizeOutcome:
    mixture: Mixture
    result: SearchResult
    prior: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    baselines: dict[str, dict[str, Any]]
    seconds: float
    interval: ConformalInterval | None = None


def domain_tokens(base: Mixture | None) -> dict[str, float]:
    """Available training tokens per domain: the base mixture's ``tokens``, else counted from its .idx files."""
    if base is None:
        return {}
    from regmix_plugin.data.token_counts import domain_tokens_or_none

    counts = {d.name: domain_tokens_or_none(base, d) for d in base.domains}
    # A domain left uncounted (unreadable .idx) is unknown here; Constraints.bounds names it if a cap needs it.
    return {name: float(n) for name, n in counts.items() if n is not None}


def study_base_mixture(path) -> Mixture:
    """The base mixture a study YAML names (``base_mixture:``, relative to the study file)."""
    from regmix_plugin.sweep.study import load_study

    study = load_study(path)
    return Mixture.load(study.base_mixture)


@dataclass
class TokenSources:
    """Where available tokens per domain come from, first source wins: the constraints YAML's ``tokens:``,
    then ``--base-mixture`` (its ``tokens``, else its .idx files), then the base mixture of ``--study``."""

    base: Mixture | None = None
    study: Mixture | None = None
    study_path: str | None = None

    def resolve(self, constraints: Constraints, names: list[str]) -> tuple[dict[str, float], dict[str, str]]:
        tokens: dict[str, float] = {}
        source: dict[str, str] = {}
        layers = [(domain_tokens(self.study), f"--study {self.study_path} (base mixture)"),
                  (domain_tokens(self.base), "--base-mixture"),
                  ({d: float(v) for d, v in constraints.tokens.items()}, "--constraints tokens")]
        for found, where in layers:  # later layers override earlier ones
            tokens.update(found)
            source.update({d: where for d in found})
        if constraints.target_tokens is not None:
            missing = [d for d in names if d not in tokens]
            if missing:
                looked = ["--constraints tokens"] + (["--base-mixture"] if self.base else []) + (
                    [f"--study {self.study_path} (its base mixture has no `tokens` and no readable .idx for it)"]
                    if self.study else [])
                raise RegmixError(
                    f"tokens.{missing[0]}: target_tokens needs the available tokens of every domain and none was "
                    f"found in {', '.join(looked)}; add tokens.{missing[0]} to the constraints YAML, or pass "
                    "--base-mixture/--study with a mixture whose domains carry `tokens`")
        return tokens, {d: source[d] for d in names if d in source}


def _prior(model: FittedModel, base: Mixture | None, label: str = "--base-mixture") -> tuple[np.ndarray, str]:
    if base is None:
        return np.array([model.prior[d] for d in model.domains]), model.prior_source
    missing = [d for d in model.domains if d not in base.names]
    if missing:
        raise RegmixError(f"{label}: no domain {missing[0]!r}; it must name every domain the model was fit on")
    return np.array([base.weight_of(d) for d in model.domains]), f"the {label} weights"


def optimize(
    model: FittedModel,
    constraints: Constraints,
    cfg: SearchConfig,
    base: Mixture | None = None,
    name: str = "regmix-opt",
    study: str | None = None,
    coverage: float = DEFAULT_COVERAGE,
) -> OptimizeOutcome:
    """Search, then write the mixture with provenance. ``study``: a study YAML whose base mixture gives
    token counts (after --constraints and ``base``) and, when ``base`` is None, the prior and prefixes."""
    t0 = time.perf_counter()
    interval = model_interval(model, coverage)  # validates coverage before any work
    study_mix = study_base_mixture(study) if study is not None else None
    constraints = constraints.named_for(model.domains)
    tokens, token_source = TokenSources(base, study_mix, study).resolve(constraints, model.domains)
    label = "--base-mixture"
    if base is None and study_mix is not None:
        base, label = study_mix, f"--study {study} base_mixture"
    prior, prior_source = _prior(model, base, label)
    if constraints.prior_pull:
        cfg.pull_kind = constraints.prior_pull.get("kind", "kl")
        cfg.pull_strength = float(constraints.prior_pull.get("strength", 0.0))
    lo, hi, source = constraints.bounds(model.domains, tokens)
    res = search(model.predictor, model.domains, prior, lo, hi, cfg, source, maximize=model.target.maximize)
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
    if interval is not None:
        uncertainty["interval"] = interval.describe(res.predicted)
        for b in baselines.values():
            b["interval"] = [interval.describe(b["predicted"])[k] for k in ("lower", "upper")]
    with_std = getattr(model.predictor, "predict_with_std", None)
    if callable(with_std):  # a GP also knows how far the chosen mixture is from the runs it saw
        uncertainty["predictive_std"] = float(with_std(res.weights[None, :])[1][0])
    weights = {d: float(w) for d, w in zip(model.domains, res.weights)}
    provenance = {
        "tool": "regmix optimize",
        "predictor": model.chosen,
        "predictor_reason": model.reason,
        **({"selection": model.selection} if model.selection else {}),
        "target": model.target.expr,
        "direction": model.target.direction,
        "direction_meaning": model.target.describe(),
        **({"auxiliary_columns": model.auxiliary} if model.auxiliary else {}),
        "cv": model.cv,
        "cv_spearman": model.cv_score("spearman"),
        **({"heldout": {k: v for k, v in model.heldout.items() if k != "predictions"}} if model.heldout else {}),
        "predicted_target": res.predicted,
        "predicted_target_uncertainty": uncertainty,
        "baselines": baselines,
        "search": {"mode": res.mode, "method": res.method, "evaluations": res.evaluations, "seconds": round(seconds, 3),
                   "n_samples": cfg.n_samples, "top_k": cfg.top_k, "seed": cfg.seed},
        "constraints": constraints.to_dict(),
        **({"token_sources": token_source} if constraints.target_tokens is not None else {}),
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
    mix = mix.with_provenance(**provenance)
    return OptimizeOutcome(mix, res, prior, lo, hi, baselines, seconds, interval)

"""Data Mixing Laws' nested prediction: step laws, then size laws (the scaling stage), then a mixing law
(`regmix_plugin.fit`) and the optimiser (`regmix_plugin.optimize`).

It orchestrates fit and optimize, so it lives above both: neither of them imports the scaling stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from regmix_plugin.laws.saturating import LawConfig
from regmix_plugin.scale.laws import SizeResult, StepFitConfig, StepResult, extrapolate_size, extrapolate_steps
from regmix_plugin.scale.match import MATCH_TOL


@dataclass
class NestedResult:
    """What :func:`nested_predict` produced at each stage."""

    steps: dict[float, StepResult]  # per model size: metrics extrapolated to the target step, laws, settings
    size: SizeResult  # metrics predicted at the target step and size, the size laws and their settings
    model: Any  # regmix_plugin.fit.model.FittedModel: the mixing law fitted on ``size.table``
    outcome: Any  # regmix_plugin.optimize.run.OptimizeOutcome: the optimised mixture

    @property
    def table(self) -> pd.DataFrame:
        return self.size.table


def nested_step_tables(
    runs_by_size: Mapping[float, Mapping[str, tuple[Mapping[str, float], pd.DataFrame]]],
    target_step: float,
    target_params: float,
    step_config: StepFitConfig | None = None,
    size_config: LawConfig | None = None,
    size_alpha: str = "auto",
    match_tol: float = MATCH_TOL,
) -> tuple[dict[float, StepResult], SizeResult]:
    """Stages 1-2 of :func:`nested_predict`: per size along steps to ``target_step``, then along size."""
    step_config = step_config or StepFitConfig()
    steps = {n: extrapolate_steps(runs, target_step, step_config) for n, runs in runs_by_size.items()}
    size = extrapolate_size({n: r.table for n, r in steps.items()}, target_params, size_config, alpha=size_alpha,
                            metrics=step_config.metrics, match_tol=match_tol)
    return steps, size


def nested_predict(
    runs_by_size: Mapping[float, Mapping[str, tuple[Mapping[str, float], pd.DataFrame]]],
    target_step: float,
    target_params: float,
    target_expr: str,
    step_config: StepFitConfig | None = None,
    size_config: LawConfig | None = None,
    fit_config: Any = None,
    constraints: Any = None,
    search_config: Any = None,
    base: Any = None,
    size_alpha: str = "auto",
) -> NestedResult:
    """Data Mixing Laws' nested prediction, from proxy curves at several sizes to an optimised mixture.

    1. per size, each mixture's evaluation metrics are extrapolated along steps to ``target_step``;
    2. across sizes, each mixture's metrics are extrapolated along size to ``target_params``;
    3. the mixing law (`regmix_plugin.fit`, ``mixing-law`` unless ``fit_config`` says otherwise) is fitted
       on those predicted metrics for ``target_expr`` (e.g. ``mean(valid/*/loss)``);
    4. the optimiser (`regmix_plugin.optimize.run.optimize`) searches the simplex with it.
    ``runs_by_size`` maps non-embedding parameters -> run id -> (weights, eval curve) (:func:`read_run_curve`).
    The law settings choose themselves (``auto``) unless the configs fix them.
    """
    from regmix_plugin.fit.model import FitConfig, fit_model
    from regmix_plugin.optimize.constraints import Constraints
    from regmix_plugin.optimize.run import optimize
    from regmix_plugin.optimize.search_config import SearchConfig

    step_config = step_config or StepFitConfig()
    steps, size = nested_step_tables(runs_by_size, target_step, target_params, step_config, size_config, size_alpha)
    table = size.table
    if fit_config is None:
        fit_config = FitConfig(predictor="mixing-law", folds=max(2, min(5, len(table))))
    model = fit_model(table, target_expr, fit_config)
    outcome = optimize(model, constraints or Constraints(), search_config or SearchConfig(), base,
                       name="nested-scaling-opt")
    outcome.mixture = outcome.mixture.with_provenance(nested={
        "target_step": target_step, "target_params": target_params, "sizes": sorted(runs_by_size),
        "step_axis": step_config.axis, "step_settings": {f"{n:g}": r.choice.to_dict() for n, r in steps.items()},
        "size_settings": size.choice.to_dict()})
    return NestedResult(steps, size, model, outcome)

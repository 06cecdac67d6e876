"""Downstream targets over many metric columns: Olmix's DCLM swarm imported as it is released, `mean(GLOB)`
as the one-flag composite target, and the rule for runs with missing metric values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regmix_plugin.cli import main
from regmix_plugin.fit.model import FitConfig, fit_model
from regmix_plugin.fit.targets import missing_report, parse_target
from regmix_plugin.sweep.collect import collect
from regmix_plugin.table import domains, metric_columns, read_runs


def test_olmix_release_imports_24_domains_and_110_metrics_without_its_row_numbers(olmix_data, tmp_path):
    df, warnings = collect(olmix=[(str(olmix_data / "dclm_ratios.csv"), str(olmix_data / "dclm_metrics.csv"))])
    assert len(df) == 127 and len(domains(df)) == 24 and "software_development" in domains(df)
    metrics = metric_columns(df)
    assert len(metrics) == 110 and "index" not in metrics and not any(m.startswith("Unnamed") for m in metrics)
    assert not warnings  # weights sum to 1 once the row-number columns are not taken for domains
    target = parse_target("mean(*)", df)
    assert len(target.terms) == 110 and abs(sum(w for w, _ in target.terms) - 1) < 1e-12
    np.testing.assert_allclose(target.values(df), df[metrics].to_numpy().mean(axis=1))


def test_a_run_missing_one_of_the_targets_columns_is_left_out_and_the_column_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), 24)
    df = pd.DataFrame({"run_id": [f"r{i:02d}" for i in range(24)], "status": "imported",
                       **{f"weight/d{j}": X[:, j] for j in range(3)}})
    for t in range(4):
        df[f"task{t}_bpb"] = 1.0 + (0.3 + 0.1 * t) * np.exp(-3 * X[:, t % 3]) + 0.01 * rng.normal(size=24)
    df.loc[[3, 7], "task2_bpb"] = np.nan
    df.loc[7, "task0_bpb"] = np.nan
    assert missing_report(df, parse_target("mean(task*_bpb)", df)) == "'task2_bpb' on 2 run(s), 'task0_bpb' on 1 run(s)"
    fitted = fit_model(df, "mean(task*_bpb)", FitConfig(predictor="linear", folds=3))
    assert fitted.dropped == ["r03", "r07"] and fitted.n_runs == 22
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    assert main(["fit", "--runs", str(path), "--target", "mean(task*_bpb)", "--predictor", "linear", "--folds", "3",
                 "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "left out 2 run(s) that failed or have no 'mean(task*_bpb)': r03, r07; missing values: 'task2_bpb' on 2" in out
    assert read_runs(path).shape == (24, 9)

"""Downstream targets over many metric columns: Olmix's DCLM swarm imported as it is released, `mean(GLOB)`
as the one-flag composite target, and the rule for runs with missing metric values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regmix_plugin.cli import main
from regmix_plugin.fit.model import FitConfig, fit_model
from regmix_plugin.fit.targets import missing_report, parse_target
from regmix_plugin.collect.runs_table import collect
from regmix_plugin.table import domains, metric_columns, read_runs


def test_olmix_release_imports_24_domains_and_110_metrics_without_its_row_numbers(olmix_data, tmp_path):
    df, warnings = collect(olmix=[(str(olmix_data / "dclm_ratios.csv"), str(olmix_data / "dclm_metrics.csv"))])
    assert len(df) == 127 and len(domains(df)) == 24 and "software_development" in domains(df)
    metrics = metric_columns(df)
    assert len(metrics) == 110 and "index" not in metrics and not any(m.startswith("Unnamed") for m in metrics)
    assert not warnings  # weights sum to 1 once the row-number columns are not taken for domains
    released = pd.read_csv(olmix_data / "dclm_ratios.csv")
    assert df["run_id"].tolist() == released["run"].astype(str).tolist()  # the released files' row order
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


def test_downstream_study_end_to_end_with_fixed_weights_repetition_limits_and_the_natural_prior(olmix_data, tmp_path):
    """24 topic domains, a mean over 110 downstream BPBs: `regmix collect` -> `regmix fit` -> `regmix optimize`
    with one domain fixed, per-domain repetition limits from token counts, and the natural distribution as
    the prior (the base mixture) and as a KL pull; regmix.json honours all of it and says so."""
    import json

    from regmix_plugin.mixture import Mixture

    runs = tmp_path / "runs.csv"
    assert main(["collect", "--olmix", str(olmix_data / "dclm_ratios.csv"), str(olmix_data / "dclm_metrics.csv"),
                 "--out", str(runs)]) == 0
    names = domains(read_runs(runs))
    # auto, kept quick: eff-law alone and in column groups (the 110 tasks are more than max_column_laws).
    params = {"candidates": ["linear", "eff-law"], "column_candidates": ["eff-law"], "n_splits": 3}
    model = tmp_path / "model"
    assert main(["fit", "--runs", str(runs), "--target", "mean(*)", "--params", json.dumps(params), "--folds", "3",
                 "--quiet", "--out", str(model)]) == 0
    doc = json.loads((model / "model.json").read_text())
    assert len(doc["target"]["terms"]) == 110 and len(doc["domains"]) == 24
    assert {r["predictor"] for r in doc["cv"]} == {"linear", "eff-law", "eff-law (2 column groups)"}
    assert doc["selection"]["best_by_cv"] in {"eff-law", "eff-law (2 column groups)"}

    # The natural distribution: token counts spread over two orders of magnitude, weights their shares.
    tokens = {d: int(2e8 * (1 + 97 * ((7 * i) % 24) / 23)) for i, d in enumerate(names)}
    total = sum(tokens.values())
    Mixture.from_dict({"version": 1, "name": "natural", "domains": [
        {"name": d, "weight": tokens[d] / total, "prefixes": [f"dclm/{d}/train"], "tokens": tokens[d]}
        for d in names]}).save(tmp_path / "natural.json")
    target_tokens = 2e10
    (tmp_path / "c.yaml").write_text(
        "fixed: {software_development: 0.12}\n"
        f"target_tokens: {target_tokens}\n"
        "max_epochs: {science_math_and_technology: 1, health: 2}\n"  # the others: 1 epoch by default
        "prior_pull: {kind: kl, strength: 0.002}\n")
    out = tmp_path / "regmix.json"
    assert main(["optimize", "--model", str(model), "--constraints", str(tmp_path / "c.yaml"),
                 "--base-mixture", str(tmp_path / "natural.json"), "--out", str(out)]) == 0
    mix = Mixture.load(out)
    w = dict(zip(mix.names, mix.weights))
    epochs = {"science_math_and_technology": 1, "health": 2}
    assert abs(sum(w.values()) - 1) < 1e-9 and abs(w["software_development"] - 0.12) < 1e-12
    for d in names:  # no domain repeated more often than allowed in the large run
        assert w[d] * target_tokens <= tokens[d] * epochs.get(d, 1) * (1 + 1e-6), d
    prov = mix.provenance
    assert prov["prior"] == {d: tokens[d] / total for d in names} and "--base-mixture" in prov["prior_source"]
    assert prov["constraints"]["fixed"] == {"software_development": 0.12}
    assert prov["active_constraints"]["software_development"].startswith("fixed")
    assert all(d in prov["active_constraints"] for d in names if w[d] * target_tokens >= tokens[d] * epochs.get(d, 1) * 0.999)
    assert prov["selection"]["best_by_cv"] and prov["predicted_target"] < prov["baselines"]["prior"]["predicted"]
    assert mix.domains[0].prefixes == [f"dclm/{names[0]}/train"]

"""Scaling laws recover known parameters from data generated with them (plus noise); rank-invariance check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.model import FitConfig
from regmix_plugin.laws.saturating import LawFitError, fit_power_laws
from regmix_plugin.scale.laws import StepFitConfig, extrapolate_size, extrapolate_steps, rank_invariance
from regmix_plugin.scale.nested import nested_predict
from regmix_plugin.collect.curves import read_eval_curve

STEPS = np.arange(20, 1001, 20, dtype=float)


def power(x, E, x0, alpha):
    return E + (x0 / x) ** alpha


def noisy(y, rng, sd):
    return y * np.exp(rng.normal(0.0, sd, size=np.shape(y)))


def test_step_law_recovers_parameters_under_noise():
    rng = np.random.default_rng(0)
    true = dict(E=2.2, x0=35.0, alpha=0.5)
    law = fit_power_laws({"web": (STEPS, noisy(power(STEPS, **true), rng, 0.003))})["web"]
    assert law.E == pytest.approx(true["E"], rel=0.03)
    assert law.alpha == pytest.approx(true["alpha"], rel=0.1)
    assert law.x0 == pytest.approx(true["x0"], rel=0.15)
    # Extrapolating 4x past the data stays within 1 %.
    assert float(law.predict(4000)) == pytest.approx(power(4000, **true), rel=0.01)


def test_huber_fit_ignores_a_few_outliers():
    rng = np.random.default_rng(1)
    true = dict(E=1.8, x0=50.0, alpha=0.7)
    y = noisy(power(STEPS, **true), rng, 0.002)
    y[[5, 17, 33]] *= 1.3  # three eval spikes
    law = fit_power_laws({"d": (STEPS, y)})["d"]
    assert law.E == pytest.approx(true["E"], rel=0.03)
    assert law.alpha == pytest.approx(true["alpha"], rel=0.1)


def test_shared_alpha_ties_exponents_and_recovers_them():
    rng = np.random.default_rng(2)
    truths = {"a": (2.0, 40.0), "b": (3.1, 15.0), "c": (1.4, 90.0)}
    curves = {d: (STEPS, noisy(power(STEPS, E, x0, 0.45), rng, 0.003)) for d, (E, x0) in truths.items()}
    laws = fit_power_laws(curves, shared_alpha=True)
    alphas = {round(law.alpha, 12) for law in laws.values()}
    assert len(alphas) == 1
    assert laws["a"].alpha == pytest.approx(0.45, rel=0.1)
    for d, (E, _) in truths.items():
        assert laws[d].E == pytest.approx(E, rel=0.03)


def test_too_few_points_is_a_one_line_error():
    with pytest.raises(LawFitError, match="usable points"):
        fit_power_laws({"web": ([10, 20, 30], [3.0, 2.9, 2.8])})


def _write_metrics(run_dir, curves: dict[str, np.ndarray], steps) -> None:
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, s in enumerate(steps):
            f.write(json.dumps({"step": int(s), "tokens": int(s) * 512, "train/loss": 9.0}) + "\n")
            rec = {"step": int(s), "tokens": int(s) * 512}
            rec.update({f"valid/{d}/loss": float(y[i]) for d, y in curves.items()})
            f.write(json.dumps(rec) + "\n")
        f.write('{"step": 10')  # a torn last line, as after a crash


def test_extrapolate_steps_from_metrics_files(tmp_path):
    rng = np.random.default_rng(3)
    runs = {}
    for i, (w, E) in enumerate([(0.2, 2.0), (0.5, 2.3), (0.8, 2.6)]):
        curves = {"web": noisy(power(STEPS, E, 30.0, 0.5), rng, 0.002),
                  "code": noisy(power(STEPS, 3.0 - E / 2, 20.0, 0.6), rng, 0.002)}
        _write_metrics(tmp_path / f"r{i}", curves, STEPS)
        runs[f"r{i}"] = ({"web": w, "code": 1 - w}, read_eval_curve(tmp_path / f"r{i}"))
    res = extrapolate_steps(runs, target=[5000, 2000], config=StepFitConfig(max_step=300, min_step=1))
    table = res.tables[5000.0]
    assert list(table["run_id"]) == ["r0", "r1", "r2"]
    assert set(table.columns) >= {"weight/web", "weight/code", "valid/web/loss", "valid/code/loss"}
    for i, (_, E) in enumerate([(0.2, 2.0), (0.5, 2.3), (0.8, 2.6)]):
        assert table.loc[i, "valid/web/loss"] == pytest.approx(power(5000, E, 30.0, 0.5), rel=0.02)
        assert res.tables[2000.0].loc[i, "valid/web/loss"] == pytest.approx(power(2000, E, 30.0, 0.5), rel=0.02)
        assert res.laws[f"r{i}"]["valid/web/loss"].n_points == len(STEPS[STEPS <= 300])
    # The exponent sharing was chosen on the held-out last part of the fitted range (steps 160..300).
    assert res.choice.how == "held-out" and res.choice.min_step == 1
    assert {s["alpha"] for s in res.choice.scores} == {"shared", "per-metric"}
    assert all(s["error"] < 0.01 for s in res.choice.scores)


def _size_tables(rng, sizes, mixtures, sd=0.002):
    tables = {}
    for n in sizes:
        rows = []
        for j, w in enumerate(mixtures):
            E_web, E_code = 1.9 + 0.6 * (1 - w), 1.5 + 0.8 * w
            rows.append({"run_id": f"n{n:g}-{j}", "status": "completed", "weight/web": w, "weight/code": 1 - w,
                         "valid/web/loss": noisy(power(n, E_web, 3e5, 0.35), rng, sd),
                         "valid/code/loss": noisy(power(n, E_code, 1e5, 0.3), rng, sd)})
        # Shuffle rows: mixtures are matched by weights, not by order or run id.
        tables[n] = pd.DataFrame(rows).sample(frac=1.0, random_state=int(n) % 97).reset_index(drop=True)
    return tables


def test_size_law_extrapolates_to_a_larger_model():
    rng = np.random.default_rng(4)
    mixtures = [0.1, 0.3, 0.5, 0.7, 0.9]
    tables = _size_tables(rng, [1e6, 4e6, 1.6e7, 6.4e7], mixtures, sd=0.001)
    res = extrapolate_size(tables, target_params=1e9, alpha="per-metric")
    pred, laws = res.table, res.laws
    assert res.dropped == [] and res.choice.how == "given"
    assert len(pred) == len(mixtures)
    for _, row in pred.iterrows():
        w = row["weight/web"]
        assert row["valid/web/loss"] == pytest.approx(power(1e9, 1.9 + 0.6 * (1 - w), 3e5, 0.35), rel=0.02)
        assert row["valid/code/loss"] == pytest.approx(power(1e9, 1.5 + 0.8 * w, 1e5, 0.3), rel=0.02)
    assert all(law.alpha > 0 for per_run in laws.values() for law in per_run.values())


def test_size_law_needs_the_same_domains():
    rng = np.random.default_rng(5)
    tables = _size_tables(rng, [1e6, 4e6, 1.6e7], [0.2, 0.5])
    tables[4e6] = tables[4e6].rename(columns={"weight/code": "weight/math", "valid/code/loss": "valid/math/loss"})
    with pytest.raises(RegmixError, match="differ"):
        extrapolate_size(tables, target_params=1e8)


def test_rank_invariance_flags_the_domain_whose_ranking_flips():
    rng = np.random.default_rng(6)
    w = np.linspace(0.05, 0.95, 12)
    small = pd.DataFrame({"run_id": [f"s{i}" for i in range(12)], "weight/web": w, "weight/code": 1 - w,
                          "valid/web/loss": 3.0 - w, "valid/code/loss": 2.0 + 0.1 * np.sin(9 * w)})
    large = pd.DataFrame({"run_id": [f"l{i}" for i in range(12)], "weight/web": w, "weight/code": 1 - w,
                          "valid/web/loss": 2.5 - 0.8 * w + rng.normal(0, 1e-3, 12),
                          "valid/code/loss": 1.8 + 0.1 * np.cos(9 * w)})
    check = rank_invariance(small, large.iloc[::-1], threshold=0.8)
    rho = dict(zip(check.table["metric"], check.table["rho"]))
    assert rho["valid/web/loss"] == pytest.approx(1.0)
    assert rho["valid/code/loss"] < 0.8
    assert check.low == ["valid/code/loss"]
    assert "valid/code/loss" in check.warning() and "regmix scale predict" in check.warning()
    assert rank_invariance(small, large, metrics=["valid/web/loss"]).warning() is None


def test_nested_prediction_finds_the_best_mixture_at_the_target_scale():
    """Curves generated by step x size x mixing laws, where the best mixture moves with model size."""
    rng = np.random.default_rng(7)
    sizes = [1e6, 4e6, 1.6e7]
    mixtures = np.linspace(0.05, 0.95, 8)  # weight of "web"
    steps = STEPS

    def loss(w, n, s):
        # Web's sensitivity to its share shrinks with size, so the target model wants less web than proxies.
        web = 2.0 + (0.3 + (2e5 / n) ** 0.3) * np.exp(-2.5 * w) + (30 / s) ** 0.5
        code = 1.6 + 0.9 * np.exp(-2.5 * (1 - w)) + (5e4 / n) ** 0.4 + (30 / s) ** 0.5
        return web, code

    runs_by_size = {}
    for n in sizes:
        runs = {}
        for j, w in enumerate(mixtures):
            web, code = loss(w, n, steps)
            curve = pd.DataFrame({"step": steps, "valid/web/loss": noisy(web, rng, 0.001),
                                  "valid/code/loss": noisy(code, rng, 0.001)})
            runs[f"m{j}"] = ({"web": w, "code": 1 - w}, curve)
        runs_by_size[n] = runs
    target_n, target_s = 1e9, 5000
    res = nested_predict(runs_by_size, target_s, target_n, "mean(valid/*/loss)",
                         fit_config=FitConfig(predictor="log-law", folds=5))
    assert res.size.choice.how == "fallback"  # 3 sizes: none to hold out
    for _, row in res.table.iterrows():
        web, code = loss(row["weight/web"], target_n, target_s)
        assert row["valid/web/loss"] == pytest.approx(web, rel=0.02)
        assert row["valid/code/loss"] == pytest.approx(code, rel=0.02)
    grid = np.linspace(0, 1, 2001)
    true_at_target = np.add(*loss(grid, target_n, target_s))
    proxy_best = grid[np.argmin(np.add(*loss(grid, sizes[0], STEPS[-1])))]
    chosen = dict(zip(res.outcome.mixture.names, res.outcome.mixture.weights))["web"]
    true_of = lambda w: float(np.add(*loss(w, target_n, target_s)))  # noqa: E731
    # Closer to the target-scale optimum than the smallest proxy's own best mixture would be.
    assert true_of(chosen) - true_at_target.min() < 0.5 * (true_of(proxy_best) - true_at_target.min())
    nested = res.outcome.mixture.provenance["nested"]
    assert nested["target_params"] == target_n and nested["size_settings"]["alpha"] == "shared"
    assert set(nested["step_settings"]) == {"1e+06", "4e+06", "1.6e+07"}


def test_scale_predict_and_rank_check_cli(tmp_path, capsys):
    from regmix_plugin.cli import main
    from regmix_plugin.table import write_runs

    rng = np.random.default_rng(8)
    sizes = [1e6, 4e6, 1.6e7, 6.4e7]
    tables = _size_tables(rng, sizes, [0.1, 0.3, 0.5, 0.7, 0.9], sd=0.001)
    paths = {n: write_runs(t, tmp_path / f"runs_{n:g}.csv") for n, t in tables.items()}
    out = tmp_path / "pred.csv"
    args = ["scale", "predict", "--target-params", "6.4e7", "--out", str(out), "--actual", str(paths[6.4e7])]
    for n, label in zip(sizes[:3], ["1000000", "4e6", "1.6e7"]):
        args += ["--scale", f"{label}={paths[n]}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| valid/web/loss |" in printed and "Spearman" in printed
    assert "size 4,000,000 non-embedding parameters (as given" in printed
    laws = json.loads((tmp_path / "pred_size_laws.json").read_text())
    errors = {r["metric"]: r for r in laws["actual"]["metrics"]}
    assert errors["valid/web/loss"]["mare"] < 0.01
    assert laws["actual"]["overall"]["pairs_in_order_mean"] == 1.0
    assert (tmp_path / "pred_vs_actual.png").stat().st_size > 1000

    assert main(["scale", "rank-check", str(paths[1e6]), str(paths[6.4e7]), "--out", str(tmp_path / "rc.json")]) == 0
    check = json.loads((tmp_path / "rc.json").read_text())
    assert {r["metric"] for r in check["rows"]} == {"valid/web/loss", "valid/code/loss"}
    assert main(["scale", "predict", "--scale", "12Q=x.csv", "--target-params", "1e9", "--out", str(out)]) == 2
    assert "--scale: '12Q' is not a parameter count" in capsys.readouterr().err


def test_scale_fit_cli_skips_failed_runs_and_fits_running_ones(tmp_path, capsys):
    from regmix_plugin.cli import main

    rng = np.random.default_rng(9)
    for name, status in (("ok", "completed"), ("early", None), ("broken", "failed")):
        curves = {"web": noisy(power(STEPS, 2.0, 30.0, 0.5), rng, 0.002)}
        _write_metrics(tmp_path / "runs" / name, curves, STEPS if status else STEPS[:10])
        (tmp_path / "runs" / name / "mixture.json").write_text(json.dumps(
            {"version": 1, "name": name, "domains": [{"name": "web", "weight": 1.0, "prefixes": ["web/train"]}]}))
        if status:
            (tmp_path / "runs" / name / "outcome.json").write_text(json.dumps({"status": status}))
    assert main(["scale", "fit", str(tmp_path / "runs"), "--target", "4000", "--out", str(tmp_path / "out")]) == 0
    assert "broken: the run failed; skipped" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "out" / "extrapolated.csv")
    assert sorted(table["run_id"]) == ["early", "ok"]
    # No status file and no config.yaml: curves made elsewhere, "imported" (not "running").
    from regmix_plugin.collect.rundir import read_run

    assert read_run(tmp_path / "runs" / "early", []).status == "imported"
    assert table.set_index("run_id").loc["early", "valid/web/loss"] == pytest.approx(power(4000, 2.0, 30.0, 0.5), rel=0.03)

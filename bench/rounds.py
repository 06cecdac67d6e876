"""Two search rounds of 16 proxies against one round of 32, and against CLIMB's rule (DECISIONS 71).

    PYTHONPATH=. nice -n 10 .venv/bin/python bench/rounds.py --out bench_out/rounds

On the demo corpus and evaluation sets (built as `regmix demo` builds them, reused when present):
A = one round of 32 (fit auto, optimize); B = the first 16 of A's runs, `regmix synthesize --around` 16 more,
fit on the union, optimize; C = CLIMB's 8_predict.py rule on A's 32 runs (LightGBM with its settings, the
argmin of 100k Dirichlet(prior) samples). Each chosen mixture is trained at proxy scale with seeds 1, 2, 3;
the target is the mean loss on the evaluation sets. Paired by seed: B - A and C - A, paired t-test.
Writes OUT/rounds.json and prints a markdown table. 57 proxy runs (the proxy sweeps reuse finished runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SEEDS = (1, 2, 3)
CLIMB_LGBM = {"boosting_type": "gbdt", "objective": "regression", "n_estimators": 1000, "learning_rate": 1e-2,
              "reg_alpha": 1.0, "reg_lambda": 1.0, "max_depth": 4, "min_child_samples": 5, "random_state": 42,
              "verbose": -1}


def regmix(*args, cwd=None) -> None:
    r = subprocess.run([sys.executable, "-m", "regmix_plugin", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"regmix {args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def climb_rule(runs: pd.DataFrame, target: str, prior: np.ndarray, names: list[str]) -> np.ndarray:
    """CLIMB's 8_predict.py: LightGBM with its settings, 90/10 split and early stopping, then the best of 100k
    Dirichlet(prior * 1) samples (argmin: our target is a loss)."""
    import lightgbm as lgb

    df = runs.sample(frac=1, random_state=42)
    cut = int(len(df) * 0.9)
    X = df[[f"weight/{d}" for d in names]].to_numpy(float)
    y = df[target].to_numpy(float)
    model = lgb.LGBMRegressor(**CLIMB_LGBM)
    model.fit(X[:cut], y[:cut], eval_set=[(X[cut:], y[cut:])], eval_metric="l2",
              callbacks=[lgb.early_stopping(stopping_rounds=min(20, len(df) - cut), verbose=False)])
    samples = np.random.default_rng(42).dirichlet(prior * 1.0, 100_000)
    return samples[int(np.argmin(model.predict(samples)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/rounds")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    from scipy.stats import ttest_rel

    from regmix_plugin.demo.config import DemoConfig
    from regmix_plugin.demo.run import TARGETS, Demo, with_target
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.table import read_runs, write_runs

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    demo = Demo(DemoConfig(out=out / "demo", proxies=32, heldout=0, seed=0, workers=args.workers),
                log=lambda *a, **k: None)
    demo.out.mkdir(parents=True, exist_ok=True)
    column, expr = TARGETS["eval"]
    for step in (demo.extract_text, demo.build_corpus, demo.synthesize, demo.proxy_sweep, demo.collect):
        step()
    natural_path = demo.path("corpus", "natural.json")
    natural = Mixture.load(natural_path)
    names = natural.names
    runs = read_runs(demo.path("runs.csv")).sort_values("run_id").reset_index(drop=True)
    assert len(runs) == 32, f"{len(runs)} completed proxy runs, 32 expected"

    # A: one round of 32.
    a = out / "A"
    a.mkdir(exist_ok=True)
    regmix("fit", "--runs", demo.path("runs.csv"), "--target", expr, "--quiet", "--out", a / "model")
    regmix("optimize", "--model", a / "model", "--base-mixture", natural_path, "--out", a / "regmix.json")

    # B: the first 16, a round of 16 around their fit, the union.
    b = out / "B"
    b.mkdir(exist_ok=True)
    write_runs(runs.head(16), b / "round1.csv")
    regmix("fit", "--runs", b / "round1.csv", "--target", expr, "--quiet", "--out", b / "model1")
    if not (b / "round2" / "manifest.json").is_file():
        regmix("synthesize", natural_path, "--around", b / "model1", "--n", 16, "--round", 2, "--seed", 0,
               "--out", b / "round2")
    study = demo._study("round2", b / "round2", demo.proxy_config, b / "runs2")
    regmix("sweep", study)
    regmix("collect", b / "runs2", "--out", b / "round2.csv")
    r2 = with_target(read_runs(b / "round2.csv"), "eval")
    write_runs(r2[r2["status"] == "completed"], b / "round2.csv")
    regmix("fit", "--runs", b / "round1.csv", "--runs", b / "round2.csv", "--target", expr, "--quiet",
           "--out", b / "model2")
    regmix("optimize", "--model", b / "model2", "--base-mixture", natural_path, "--out", b / "regmix.json")

    # C: CLIMB's rule on A's runs.
    w_c = climb_rule(runs, column, np.array(natural.weights, float), names)
    mixes = {"A_one_round_32": Mixture.load(a / "regmix.json"), "B_two_rounds_16": Mixture.load(b / "regmix.json"),
             "C_climb_rule_32": Mixture.from_weights(dict(zip(names, w_c.tolist())), template=natural, name="climb")}
    folder = out / "chosen"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    for k, m in mixes.items():
        m = Mixture.from_weights(dict(zip(m.names, m.weights)), template=natural, name=k).rebased(folder)
        m.save(folder / f"{k}.json")

    scores: dict[str, dict[int, float]] = {k: {} for k in mixes}
    for seed in SEEDS:
        study = demo._study(f"eval-seed{seed}", folder, demo.proxy_config, out / f"eval_seed{seed}",
                            extra=("--set", f"train.seed={seed}"))
        regmix("sweep", study)
        regmix("collect", out / f"eval_seed{seed}", "--out", out / f"eval_seed{seed}.csv")
        df = with_target(read_runs(out / f"eval_seed{seed}.csv"), "eval")
        for _, row in df.iterrows():
            scores[row["run_id"]][seed] = float(row[column])
    A = np.array([scores["A_one_round_32"][s] for s in SEEDS])
    rows = []
    for k in mixes:
        v = np.array([scores[k][s] for s in SEEDS])
        row = {"protocol": k, "mean": float(v.mean()), "sd": float(v.std(ddof=1)), "per_seed": v.tolist(),
               "weights": dict(zip(mixes[k].names, map(float, mixes[k].weights)))}
        if k != "A_one_round_32":
            d = v - A
            row.update({"minus_A_mean": float(d.mean()), "minus_A_per_seed": d.tolist(),
                        "paired_t_p": float(ttest_rel(v, A).pvalue)})
        rows.append(row)
    models = {k: json.loads((p / "model.json").read_text())["chosen"] for k, p in
              (("A", a / "model"), ("B_round1", b / "model1"), ("B_union", b / "model2"))}
    result = {"protocol": "DECISIONS 71", "target": expr, "seeds": list(SEEDS), "rows": rows, "predictors": models,
              "proxy_runs": 32 + 16 + 3 * len(SEEDS), "wall_seconds": round(time.perf_counter() - t0, 1)}
    (out / "rounds.json").write_text(json.dumps(result, indent=2))
    print("| protocol | target (mean of seeds 1-3) | sd | minus A (paired) | p |")
    print("|---|---|---|---|---|")
    for r in rows:
        extra = f"{r['minus_A_mean']:+.4f} | {r['paired_t_p']:.3f}" if "minus_A_mean" in r else "- | -"
        print(f"| {r['protocol']} | {r['mean']:.4f} | {r['sd']:.4f} | {extra} |")
    print(f"predictors chosen by auto: {models}; {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Development data for `auto`'s selection rule (issue 27): every candidate's repeated-CV record and its score on
the runs left out, so rules can be compared offline without refitting.

For each seed, the first k runs of ``default_rng(seed).permutation(N)`` are the training runs; `auto`'s
candidates are cross-validated on them over ``--repeats`` partitions (as `auto` does), and each candidate is
also refitted on all k and scored (Spearman x100) on the other N - k runs. Rules are then replayed on the
records (``--replay``). Use development seeds only (100-119 for DCLM; RegMix: subsets of the train runs scored
on the other train runs), never the goal seeds.

    nice .venv/bin/python bench/selection_dev.py --dataset dclm --k 32 --seeds 100-109 --out bench_out/sel_dclm32.json
    .venv/bin/python bench/selection_dev.py --replay bench_out/sel_dclm32.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1].parent


def dataset(name: str):
    """(runs table, target expression, runs that may be scored)."""
    if name == "dclm":
        from regmix_plugin.collect.runs_table import from_olmix_csv

        d = ROOT / "shared/data/olmix-dclm"
        return from_olmix_csv(d / "dclm_ratios.csv", d / "dclm_metrics.csv", []), "mean(*)"
    from regmix_plugin.table import from_regmix_csv

    d = ROOT / "shared/data/regmix-pile-1m"
    return from_regmix_csv(d / "train_mixture_1m.csv", d / "train_pile_loss_1m.csv"), "valid/pile_cc/loss"


def record(df, target_expr: str, k: int, seed: int, repeats: int) -> dict:
    from regmix_plugin.fit.auto import AutoPredictor
    from regmix_plugin.fit.base import FitData
    from regmix_plugin.fit.model import auxiliary_losses
    from regmix_plugin.fit.oof import make
    from regmix_plugin.fit.targets import parse_target
    from regmix_plugin.table import weight_matrix

    target = parse_target(target_expr, df)
    perm = np.random.default_rng(seed).permutation(len(df))
    tr, te = df.iloc[perm[:k]].reset_index(drop=True), df.iloc[perm[k:]].reset_index(drop=True)
    X, y = weight_matrix(tr), target.values(tr)
    aux_names, aux = auxiliary_losses(tr, target)
    data = FitData(X, y, columns=np.column_stack([tr[c].to_numpy(float) for c in target.columns]),
                   column_weights=np.array([w for w, _ in target.terms]), auxiliary=aux, auxiliary_names=tuple(aux_names))
    t0 = time.perf_counter()
    auto = AutoPredictor(repeats=repeats).fit(data)
    cv_s = time.perf_counter() - t0
    cols, aux2 = auto._extras(data)
    rows = []
    res = {r["predictor"]: r for r in auto.cv_}
    for label, spec, fit_on in auto._plan(cols, aux2):
        row = {"name": label, "flexibility": auto._flexibility(spec, fit_on), "note": res[label].get("note", "")}
        try:
            if fit_on in ("columns", "column groups"):
                m = make(spec).fit(FitData(X, y, columns=cols[0], column_weights=cols[1]))
            elif fit_on == "aux":
                m = make(spec).fit(FitData(X, y, auxiliary=aux2))
            else:
                m = make(spec).fit(X, y)
            p = m.predict(weight_matrix(te))
            row["test"] = float(100 * spearmanr(p, target.values(te))[0]) if np.ptp(p) > 0 else 0.0
            row["pred"] = p.tolist()
        except Exception as e:  # noqa: BLE001 - recorded, the rule never chooses a candidate that failed in CV
            row["test"], row["note"] = None, row["note"] or f"refit failed: {e}"
        rows.append(row)
    # Per-partition records from auto's own CVResults (kept on the instance for this script).
    for row, r in zip(rows, auto._results_):
        row["per_partition"] = r.per_partition
        row["fold_scores"] = None if r.fold_scores is None else r.fold_scores.tolist()
    return {"seed": seed, "k": k, "chosen": auto.chosen_, "y_test": target.values(te).tolist(), "cv_seconds": cv_s, "candidates": rows,
            "baselines": list(auto.baselines)}


def flex(r: dict, order: str) -> int:
    """The candidate's flexibility as recorded ("recorded"), or with every eff-law form at 0 ("family")."""
    if order == "family" and r["name"].startswith("eff-law"):
        return 0
    return r["flexibility"]


def choose(rec: dict, rule: str, R: int, n_splits: int = 5, order: str = "recorded") -> str:
    from regmix_plugin.fit.cv import corrected_se

    c = [r for r in rec["candidates"] if not r["note"] and r["per_partition"] is not None and r["name"] not in rec["baselines"]]
    score = {r["name"]: float(np.mean(r["per_partition"][:R])) for r in c}
    best = max(c, key=lambda r: score[r["name"]])
    if rule == "best":
        return best["name"]
    mult = {"1se": 1.0, "0.5se": 0.5, "2se": 2.0}[rule]
    within = []
    for r in c:
        d = np.array(best["fold_scores"][:R]) - np.array(r["fold_scores"][:R])
        se = 0.0 if r is best else corrected_se(d, n_splits)
        if score[best["name"]] - score[r["name"]] <= mult * se:
            within.append(r)
    return min(within, key=lambda r: (flex(r, order), -score[r["name"]]))["name"]


def averaged(rec: dict, R: int, order: str, mult: float = 1.0) -> float | None:
    """Test Spearman of the mean prediction of every candidate within ``mult`` standard errors of the best that is
    as constrained as the most constrained of them (None without stored predictions)."""
    from regmix_plugin.fit.cv import corrected_se

    if "y_test" not in rec:
        return None
    c = [r for r in rec["candidates"] if not r["note"] and r["per_partition"] is not None and r["name"] not in rec["baselines"]]
    score = {r["name"]: float(np.mean(r["per_partition"][:R])) for r in c}
    best = max(c, key=lambda r: score[r["name"]])
    within = [r for r in c if r is best or score[best["name"]] - score[r["name"]] <= mult * corrected_se(
        np.array(best["fold_scores"][:R]) - np.array(r["fold_scores"][:R]), 5)]
    f = min(flex(r, order) for r in within)
    keep = [r for r in within if flex(r, order) == f and r.get("pred") is not None]
    p = np.mean([r["pred"] for r in keep], axis=0)
    return float(100 * spearmanr(p, rec["y_test"])[0])


def replay(paths: list[str]) -> None:
    for path in paths:
        recs = json.loads(Path(path).read_text())
        R_max = min(len(r["per_partition"]) for rec in recs for r in rec["candidates"] if r["per_partition"])
        print(f"{path}: {len(recs)} seeds, seeds {recs[0]['seed']}-{recs[-1]['seed']}")
        oracle = [max(r["test"] for r in rec["candidates"] if r["test"] is not None) for rec in recs]
        print(f"  oracle (best candidate on the left-out runs) mean {np.mean(oracle):.1f}")
        for name in ("eff-law", "eff-law (2 column groups)", "log-law"):
            v = [next((r["test"] for r in rec["candidates"] if r["name"] == name), None) for rec in recs]
            if all(x is not None for x in v):
                print(f"  always {name:28s} mean {np.mean(v):5.1f} worst {np.min(v):5.1f}")
        for rule, order in (("best", "recorded"), ("0.5se", "recorded"), ("1se", "recorded"), ("2se", "recorded"),
                            ("0.5se", "family"), ("1se", "family"), ("2se", "family")):
            for R in range(1, R_max + 1):
                v = []
                picks = []
                for rec in recs:
                    name = choose(rec, rule, R, order=order)
                    picks.append(name)
                    v.append(next(r["test"] for r in rec["candidates"] if r["name"] == name))
                common = max(set(picks), key=picks.count)
                print(f"  {rule:5s} {order:8s} R={R}: mean {np.mean(v):5.1f} worst {np.min(v):5.1f}  (most chosen: {common} x{picks.count(common)})")
        replay_average(recs, R_max)


def replay_average(recs: list, R_max: int) -> None:
    for order in ("recorded", "family"):
        for R in range(1, R_max + 1):
            v = [averaged(rec, R, order) for rec in recs]
            if all(x is not None for x in v):
                print(f"  avg1se {order:8s} R={R}: mean {np.mean(v):5.1f} worst {np.min(v):5.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("dclm", "regmix"), default="dclm")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--seeds", default="100-109")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--replay", nargs="*")
    args = ap.parse_args(argv)
    if args.replay:
        replay(args.replay)
        return 0
    lo, hi = map(int, args.seeds.split("-"))
    df, target = dataset(args.dataset)
    recs = []
    for s in range(lo, hi + 1):
        recs.append(record(df, target, args.k, s, args.repeats))
        print(f"seed {s}: chose {recs[-1]['chosen']} in {recs[-1]['cv_seconds']:.1f} s", file=sys.stderr, flush=True)
        Path(args.out).write_text(json.dumps(recs))
    replay([args.out])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

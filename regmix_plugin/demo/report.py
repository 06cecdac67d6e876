"""The demo's report: did the RegMix mixture win at the target scale, by how much, and how sure are we.

Everything in it is read back from files the stages wrote (runs tables, the model folder, regmix.json,
timings.json), so the report can be rebuilt without training anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from regmix_plugin.io import atomic_write_json, atomic_write_text, json_safe
from regmix_plugin.markdown_table import markdown_table
from regmix_plugin.mixture import Mixture
from regmix_plugin.report.builder import new_figure, save_figure
from regmix_plugin.report.html import markdown_to_html
from regmix_plugin.table import read_runs

if TYPE_CHECKING:
    from regmix_plugin.demo.run import Demo

ORDER = ["regmix", "natural", "uniform", "best-proxy"]


def _md_table(df: pd.DataFrame, fmt: str = "{:.4f}") -> str:
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    rows = [[str(idx)] + [fmt.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) else str(v) for v in row]
            for idx, *row in df.itertuples(name=None)]  # column by column: an int column stays int (iterrows casts rows)
    return markdown_table(cols, rows)


ALPHA = 0.05  # two-sided paired t-test across seeds (docs/DECISIONS.md 49)


def paired_differences(df: pd.DataFrame, target: str) -> pd.DataFrame:
    """RegMix against each baseline, seed by seed: ``df`` has one row per (mixture, seed) with ``target``.

    The runs of one seed share the initial weights and data order, so the difference of two mixtures on the
    same seed removes that seed's luck; the test is a two-sided paired t-test on those differences.
    Columns: gain (baseline minus RegMix, mean over seeds; > 0 means RegMix is better), its std over seeds,
    the t statistic and p-value (n - 1 degrees of freedom), and on how many seeds RegMix was better.
    """
    wide = df.pivot_table(index="seed", columns="mixture", values=target)
    rows = {}
    for base in [n for n in ORDER if n != "regmix" and n in wide.columns]:
        d = (wide[base] - wide["regmix"]).dropna().to_numpy()
        n = len(d)
        mean = float(d.mean()) if n else float("nan")
        std = float(d.std(ddof=1)) if n > 1 else float("nan")
        if n > 1 and std > 0:
            t = mean / (std / np.sqrt(n))
            p = float(2 * student_t.sf(abs(t), n - 1))
        else:
            t = p = float("nan")
        rows[base] = {"gain": mean, "gain std": std, "t": t, "p": p, "seeds": n,
                      "RegMix better on": int((d > 0).sum())}
    out = pd.DataFrame(rows).T
    out.index.name = "baseline"
    return out


def _verdict(summary: pd.DataFrame, paired: pd.DataFrame, target: str) -> tuple[str, dict]:
    regmix = float(summary.loc["regmix", target])
    others = summary.drop(index="regmix")
    best_name = others[target].idxmin()
    best = float(others.loc[best_name, target])
    gap = best - regmix  # > 0: RegMix is better (lower loss)
    n = int(summary["seeds"].min())
    facts = {"regmix": regmix, "best_baseline": best_name, "best_baseline_loss": best, "gap": gap, "seeds": n,
             "paired": {b: {k: (None if isinstance(v, float) and not np.isfinite(v) else float(v))
                            for k, v in r.items()} for b, r in paired.iterrows()}}
    # With fewer than 3 seeds a t-test has 1 degree of freedom or none: no difference is called real.
    sig_better = [b for b, r in paired.iterrows() if n >= 3 and r["gain"] > 0 and r["p"] < ALPHA]
    sig_worse = [b for b, r in paired.iterrows() if n >= 3 and r["gain"] < 0 and r["p"] < ALPHA]
    facts["won_beyond_noise"] = len(sig_better) == len(paired) and len(paired) > 0
    facts["beyond_noise_against"] = sig_better
    test = f"two-sided paired t-test over {n} seeds, p < {ALPHA}"
    if n < 3:
        test += f"; with {n} seed{'s' if n > 1 else ''} there is no usable test, so no difference is called real"
    elif n < 5:
        test += (f"; with {n} seeds the test has little power: it needs the gain to be about "
                 f"{student_t.ppf(1 - ALPHA / 2, n - 1):.1f} standard errors")
    pairs = "; ".join(f"{b} {r['gain']:+.4f} (p = {r['p']:.2g}, better on {int(r['RegMix better on'])} of "
                      f"{int(r['seeds'])} seeds)" for b, r in paired.iterrows())
    if facts["won_beyond_noise"]:
        text = (f"**The RegMix mixture won, beyond seed noise.** Its mean target loss is {regmix:.4f}, "
                f"{gap:.4f} below the best baseline ({best_name}, {best:.4f}), and lower than every baseline "
                f"by more than the seed noise. Gain over each baseline: {pairs} ({test}).")
    elif gap > 0:
        within = ", ".join(b for b in paired.index if b not in sig_better)
        head = (f"lowest loss: beyond seed noise against {', '.join(sig_better)}, within it against {within}"
                if sig_better else f"lowest loss, but not beyond seed noise against {within}")
        text = (f"**The RegMix mixture has the {head}.** Its mean target loss is "
                f"{regmix:.4f}, {gap:.4f} below the best baseline ({best_name}, {best:.4f}). Gain over each "
                f"baseline: {pairs} ({test}).")
    else:
        worse = (f" It is worse than {', '.join(sig_worse)} beyond seed noise." if sig_worse
                 else " The difference is within seed noise: a tie.")
        text = (f"**The RegMix mixture did not win.** Its mean target loss is {regmix:.4f}; the best baseline "
                f"({best_name}) reached {best:.4f}, {-gap:.4f} lower.{worse} Gain over each baseline: {pairs} "
                f"({test}). See 'Why it may lose' below.")
    return text, facts


def _gains(demo: "Demo", paired: pd.DataFrame, target: str) -> tuple[str, dict]:
    """What the proxies promised against what the target model delivered, per baseline."""
    pred_path = demo.path("target_mixture_predictions.csv")
    if not pred_path.is_file():
        return "", {}
    names = pd.read_csv(demo.path("target_mixtures.csv"))["run_id"]
    pred = pd.Series(pd.read_csv(pred_path)["prediction"].to_numpy(), index=names)
    table = pd.DataFrame(index=paired.index)
    table["predicted gain (proxy scale)"] = [pred[b] - pred["regmix"] for b in paired.index]
    actual_path = demo.path("proxy_eval_runs.csv")
    if actual_path.is_file():
        actual = read_runs(actual_path)
        proxy = pd.Series(actual[target].to_numpy(), index=actual["run_id"].str.rsplit("-", n=1).str[0])
        table["measured gain (proxy scale, 1 run)"] = [proxy.get(b, np.nan) - proxy.get("regmix", np.nan)
                                                       for b in paired.index]
    table["realised gain (target model)"] = paired["gain"]
    table["± std over seeds"] = paired["gain std"]
    text = ("Gains are the baseline's loss minus the RegMix mixture's (positive: RegMix is better). The "
            "predictor's promise, the proxies' own measurement, and what the target model realised:\n\n"
            + _md_table(table))
    facts = {"gains": {b: {k: (None if not np.isfinite(v) else float(v)) for k, v in r.items()}
                       for b, r in table.iterrows()}}
    return text, facts


def _figures(demo: "Demo", summary: pd.DataFrame, df: pd.DataFrame, mixes: dict[str, Mixture],
             target: str) -> list[str]:
    fig_dir = demo.path("report")
    names = [n for n in ORDER if n in summary.index]
    paths = []

    fig = new_figure(6, 3.5)
    ax = fig.add_subplot(111)
    vals = [summary.loc[n, target] for n in names]
    errs = [summary.loc[n, f"{target} (std)"] if summary.loc[n, "seeds"] > 1 else 0 for n in names]
    ax.bar(names, vals, yerr=errs, capsize=4, color=["tab:red" if n == "regmix" else "tab:gray" for n in names])
    # Each seed as a dot, joined across mixtures: a seed's runs share initial weights and data order, so the
    # lines show the paired comparison the verdict tests.
    wide = df.pivot_table(index="seed", columns="mixture", values=target).reindex(columns=names)
    for seed, row in wide.iterrows():
        ax.plot(names, row.to_numpy(), "o-", color="black", alpha=0.5, lw=0.8, ms=3)
    seeds = wide.to_numpy()[np.isfinite(wide.to_numpy())]
    pad = 2 * max(max(errs), 0.002)
    ax.set_ylim(min(seeds.min(), min(vals)) - pad, max(seeds.max(), max(vals)) + pad)
    ax.set_ylabel("eval-set loss (nats/byte)" if demo.cfg.target == "eval" else "mean per-domain valid loss (nats)")
    ax.set_title("Target model: loss by mixture (bars: mean ± std; dots: seeds)", fontsize=10)
    save_figure(fig, fig_dir / "target_loss.png")
    paths.append("target_loss.png")

    domains = mixes["natural"].names
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot(111)
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        w = [mixes[n].weight_of(d) for d in domains]
        ax.bar(np.arange(len(domains)) + i * width, w, width, label=n)
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, rotation=30, ha="right")
    ax.set_ylabel("weight")
    ax.legend()
    ax.set_title("Mixture weights")
    save_figure(fig, fig_dir / "weights.png")
    paths.append("weights.png")
    return paths


def _heldout_check(demo: "Demo", target: str) -> tuple[str, dict]:
    pred_path = demo.path("heldout_predictions.csv")
    if not pred_path.is_file():
        return "No held-out proxy mixtures were run.", {}
    held = read_runs(demo.path("runs_heldout.csv")).reset_index(drop=True)
    pred = pd.read_csv(pred_path)["prediction"].to_numpy()
    actual = held[target].to_numpy()
    rho = float(spearmanr(pred, actual).statistic) if len(actual) > 2 else float("nan")
    mae = float(np.mean(np.abs(pred - actual)))
    text = (f"On the {len(actual)} held-out proxy mixtures (never fitted on), the chosen predictor ranks the "
            f"target with Spearman ρ = {rho:.3f} and a mean absolute error of {mae:.4f} nats.")
    return text, {"heldout_spearman": rho, "heldout_mae": mae, "heldout_runs": len(actual)}


def _rank_check(demo: "Demo", target: str) -> tuple[str, dict]:
    """The held-out mixtures at both scales (stage 9): per-metric Spearman rho, proxy vs target model."""
    path = demo.path("rank_check.json")
    if not path.is_file():
        return "", {}
    check = json.loads(path.read_text())
    rows = pd.DataFrame(check["rows"]).set_index("metric")
    rows.index = [m.replace("valid/", "").replace("/loss", "") for m in rows.index]
    rows.index.name = "metric"
    rho = rows.loc[target, "rho"] if target in rows.index else float("nan")
    n = int(rows.loc[target, "n"]) if target in rows.index else 0
    table = rows[["rho", "n"]].rename(columns={"rho": "Spearman ρ", "n": "mixtures"})
    text = (f"The same {n} held-out mixtures were also trained at the target scale (seed "
            f"{demo.cfg.target_seeds[0]}). Proxy and target rank them with Spearman ρ = {rho:.2f} on the target "
            f"metric; per domain:\n\n" + _md_table(table, "{:.2f}"))
    if check.get("warning"):
        text += f"\n\n{check['warning']}"
    return text, {"rank_check_spearman": float(rho), "rank_check_mixtures": n}


def _four_mixtures(demo: "Demo", summary: pd.DataFrame, facts: dict, target: str) -> str:
    """The four evaluated mixtures at both scales: predicted and actual proxy loss, and target loss.

    Separates the two ways RegMix can lose: the regression's optimum is not the best at proxy scale
    (prediction error), or it is and the ranking does not carry over to the larger model (scale).
    """
    pred_path = demo.path("target_mixture_predictions.csv")
    if not pred_path.is_file():
        return ""
    names = pd.read_csv(demo.path("target_mixtures.csv"))["run_id"]
    table = pd.DataFrame({"predicted (proxy scale)": pd.read_csv(pred_path)["prediction"].to_numpy()}, index=names)
    actual_path = demo.path("proxy_eval_runs.csv")
    if actual_path.is_file():
        actual = read_runs(actual_path)
        actual.index = actual["run_id"].str.rsplit("-", n=1).str[0]
        table["proxy loss"] = actual[target]
    common = [n for n in ORDER if n in table.index and n in summary.index]
    table = table.loc[common]
    table["target loss"] = summary.loc[common, target]
    table.index.name = "mixture"
    col = "proxy loss" if "proxy loss" in table else "predicted (proxy scale)"
    rho = float(spearmanr(table[col], table["target loss"]).statistic)
    facts["proxy_vs_target_spearman"] = rho
    text = ("The four evaluated mixtures at both scales (proxy loss: one proxy run each; target loss: mean "
            "over seeds):\n\n" + _md_table(table) + "\n\n"
            f"Spearman ρ between the {col} and the target loss over these {len(common)} mixtures: {rho:.2f}.")
    if "proxy loss" in table:
        best_proxy_scale = table["proxy loss"].idxmin()
        facts["best_at_proxy_scale"] = best_proxy_scale
        text += (f" At proxy scale the best of the four is {best_proxy_scale}"
                 + (" (the regression's choice)." if best_proxy_scale == "regmix" else
                    ": the regression's choice is not the best at proxy scale either, so prediction error near "
                    "the optimum, not only the change of scale, explains the result."))
    return text


def _timings(demo: "Demo") -> pd.DataFrame:
    # A report rebuilt on its own (no stages run in this process) shows the last run's stage times.
    timings = demo.timings
    if not timings and demo.path("timings.json").is_file():
        timings = json.loads(demo.path("timings.json").read_text())
    df = pd.DataFrame(timings).T
    df.index.name = "stage"
    return df


def _target_description(demo: "Demo") -> str:
    if demo.cfg.target == "eval":
        return ("the mean validation loss (nats per byte) on the evaluation sets eval_devil, eval_licenses and "
                "eval_changelogs, which no mixture trains on (docs/DECISIONS.md 49)")
    return "the mean over training domains of their own validation losses (the old target, `--target train-mean`)"


def _numerics(demo: "Demo") -> tuple[str, dict]:
    """Which kernels and library versions computed the runs: what a rerun elsewhere must match to get the
    same numbers (docs/DECISIONS.md 65)."""
    from regmix_plugin.demo.numerics import numerics_record
    from regmix_plugin.demo.run import run_env

    pins = {k: v for k, v in run_env().items() if k != "OMP_NUM_THREADS"}
    dirs = [d for d in demo.proxy_dir.joinpath("runs").glob("*")]
    dirs += [d for s in demo.cfg.target_seeds for d in demo.target_dir(s).joinpath("runs").glob("*")]
    rec = numerics_record(sorted(dirs), pins)
    kernels = "; ".join(f"torch {k['torch']}, {k['cpu_capability']} kernels" for k in rec["kernels_of_runs"])
    versions = ", ".join(f"{p} {v}" for p, v in rec["versions"].items())
    pinned = (f"pinned to AVX2 ({', '.join(f'{k}={v}' for k, v in pins.items())}), so every x86-64 CPU with AVX2 "
              "and FMA runs the same ATen and oneDNN kernels (MKL follows the pin on Intel CPUs only)" if pins else
              "not pinned: this CPU has no AVX2 and FMA (or is not x86-64), so its numbers may differ from other "
              "machines' in the last digits, and the RegMix mixture's by seed noise")
    text = (f"Computed on {rec['cpu']} ({rec['machine']}), one thread per run, CPU kernels {pinned}. The runs "
            f"record: {kernels or 'nothing (no run found)'}. Versions: {versions}. Another torch, MKL or oneDNN "
            "version may round differently; on one machine the numbers are the same to the last digit under any load "
            "(docs/DECISIONS.md 65).")
    if len(rec["kernels_of_runs"]) > 1:
        text += " **The runs were not all computed with the same kernels**: some were reused from an earlier run."
    return text, rec


def write_demo_report(demo: "Demo") -> str:
    from regmix_plugin.demo.run import summarize_targets, target_table

    target = demo.target
    out = demo.path("report")
    out.mkdir(parents=True, exist_ok=True)
    df = target_table(demo)
    summary = summarize_targets(df, target)
    done = df[df["status"] == "completed"]
    paired = paired_differences(done, target)
    mixes = {n: Mixture.load(next(demo.path("target_mixtures").glob(f"{n}-*.json"))) for n in ORDER}
    verdict, facts = _verdict(summary, paired, target)
    gains_text, gains_facts = _gains(demo, paired, target)
    held_text, held_facts = _heldout_check(demo, target)
    check_text, check_facts = _rank_check(demo, target)
    numerics_text, numerics_facts = _numerics(demo)
    figs = _figures(demo, summary, done, mixes, target)
    model = json.loads(demo.path("model", "model.json").read_text())
    runs = read_runs(demo.path("runs.csv"))

    rank_text = _four_mixtures(demo, summary, facts, target)

    # The headline table: mean ± std and each seed's loss, per mixture.
    wide = done.pivot_table(index="mixture", columns="seed", values=target)
    headline = pd.DataFrame({"mean": summary[target], "std over seeds": summary[f"{target} (std)"]})
    for seed in wide.columns:
        headline[f"seed {seed}"] = wide[seed]
    headline = headline.loc[[n for n in ORDER if n in headline.index]]
    headline.index.name = "mixture"
    per_domain = summary[[c for c in summary.columns if c.startswith("valid/")] + [target]].copy()
    per_domain.columns = [c.replace("valid/", "").replace("/loss", "") for c in per_domain.columns]
    per_domain.index.name = "mixture"
    weights = pd.DataFrame({n: [m.weight_of(d) for d in mixes["natural"].names] for n, m in mixes.items()},
                           index=mixes["natural"].names).T
    weights.index.name = "mixture"
    timings = _timings(demo)
    cv = pd.DataFrame(model.get("cv", [])).set_index("predictor") if model.get("cv") else pd.DataFrame()
    paired_table = paired.copy()
    paired_table["RegMix better on"] = [f"{int(r['RegMix better on'])} of {int(r['seeds'])}"
                                        for _, r in paired.iterrows()]
    paired_table = paired_table.drop(columns="seeds")

    lines = [
        "# RegMix demo report",
        "",
        verdict,
        "",
        f"Target: `{target}`, {_target_description(demo)}, of the target model ({demo.target_config.name}) "
        f"trained on each mixture with seeds {demo.cfg.target_seeds}. The proxies ({demo.proxy_config.name}) "
        f"were trained on {len(runs)} mixtures.",
        "",
        _md_table(headline),
        "",
        "![target loss](target_loss.png)",
        "",
        "## RegMix against each baseline, seed by seed",
        "",
        "Gain = the baseline's loss minus the RegMix mixture's on the same seed (positive: RegMix is better); "
        f"t and p from a two-sided paired t-test over the seeds (significant when p < {ALPHA}).",
        "",
        _md_table(paired_table),
        "",
        gains_text,
        "",
        "## Target-scale results per evaluation set and domain (mean over seeds)",
        "",
        _md_table(per_domain),
        "",
        "## The mixtures",
        "",
        _md_table(weights, "{:.3f}"),
        "",
        "![weights](weights.png)",
        "",
        "## The predictor",
        "",
        f"Chosen: **{model.get('chosen', model.get('predictor'))}**. {model.get('reason', '')}",
        "",
        _md_table(cv, "{:.3f}") if len(cv) else "",
        "",
        held_text,
        "",
        rank_text,
        "",
        "## Do the proxies rank mixtures as the target model does?",
        "",
        check_text or "Not measured (no held-out mixtures).",
        "",
        "## Why it may lose",
        "",
        "RegMix assumes that the ranking of mixtures at proxy scale holds at the target scale, and that the "
        "regression has seen enough proxies to find the best one. The report measures both: the held-out ρ "
        "above (is the regression right on mixtures it never saw?), the rank check on the held-out mixtures "
        "trained at both scales (does the ranking transfer?), and the four evaluated mixtures at both scales "
        "(does the chosen mixture win at proxy scale, and does that carry over?). When the best mixtures differ "
        "by less than the seed noise, the optimum is flat and a token-proportional or uniform mixture is "
        "already close to it; more proxies near the optimum, or more seeds, are then what would separate them.",
        "",
        "## Wall time per stage",
        "",
        _md_table(timings, "{:.1f}"),
        "",
        "## What the numbers depend on",
        "",
        numerics_text,
        "",
        "## Use it on a GPU cluster",
        "",
        "```bash",
        megatron_launch_line(demo),
        "```",
        "",
    ]
    md = "\n".join(lines)
    atomic_write_text(out / "demo.md", md)
    atomic_write_text(out / "demo.html", markdown_to_html(md, "RegMix demo report"))
    record = {**facts, **gains_facts, **held_facts, **check_facts, "target": target, "figures": figs,
              "numerics": numerics_facts}
    atomic_write_json(out / "demo.json", json_safe(record))
    if facts["won_beyond_noise"]:
        return "RegMix won beyond seed noise"
    if facts["gap"] > 0:
        beaten = len(facts["beyond_noise_against"])
        return f"RegMix lowest; beyond seed noise against {beaten} of {len(facts['paired'])} baselines"
    return "RegMix did not win"


def megatron_launch_line(demo: "Demo") -> str:
    """The launch of examples/megatron_tp2_pp2.sh with the chosen mixture (byte tokenizer: 257 ids)."""
    return (
        "torchrun --standalone --nproc-per-node 4 -m regmix_plugin.megatron.pretrain_gpt \\\n"
        "    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 \\\n"
        "    --num-layers 8 --hidden-size 512 --ffn-hidden-size 2048 --num-attention-heads 8 \\\n"
        "    --seq-length 1024 --max-position-embeddings 1024 \\\n"
        "    --micro-batch-size 4 --global-batch-size 32 --train-samples 102400 \\\n"
        "    --lr 6e-4 --min-lr 6e-5 --lr-decay-style cosine --lr-warmup-samples 3200 --bf16 \\\n"
        "    --tokenizer-type NullTokenizer --vocab-size 257 \\\n"
        f"    --data-mixture-from {demo.path('regmix.json')} --save runs/big"
    )

"""The demo's report: did the RegMix mixture win at the target scale, by how much, and how sure are we.

Everything in it is read back from files the stages wrote (runs tables, the model folder, regmix.json,
timings.json), so the report can be rebuilt without training anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from regmix_plugin.io import atomic_write_json, atomic_write_text  # noqa: E402
from regmix_plugin.mixture import Mixture  # noqa: E402
from regmix_plugin.table import read_runs  # noqa: E402

if TYPE_CHECKING:
    from regmix_plugin.demo.run import Demo

ORDER = ["regmix", "natural", "uniform", "best-proxy"]


def _md_table(df: pd.DataFrame, fmt: str = "{:.4f}") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, *row in df.itertuples(name=None):  # column by column: an int column stays int (iterrows casts rows)
        cells = [fmt.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) else str(v) for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def _verdict(summary: pd.DataFrame, target: str) -> tuple[str, dict]:
    std_col = f"{target} (std)"
    regmix = summary.loc["regmix", target]
    others = summary.drop(index="regmix")
    best_name = others[target].idxmin()
    best = others.loc[best_name, target]
    gap = best - regmix  # > 0: RegMix is better (lower loss)
    spread = float(np.nanmax(summary[std_col].to_numpy())) if summary["seeds"].min() > 1 else float("nan")
    facts = {"regmix": float(regmix), "best_baseline": best_name, "best_baseline_loss": float(best),
             "gap": float(gap), "max_seed_std": spread, "seeds": int(summary["seeds"].min())}
    if gap > 0:
        sure = (f"larger than the largest seed-to-seed standard deviation ({spread:.4f})" if np.isfinite(spread)
                and gap > spread else f"but within seed noise (largest seed std {spread:.4f})" if np.isfinite(spread)
                else "with a single seed, so the spread is unknown")
        text = (f"**The RegMix mixture won.** Its mean target loss is {regmix:.4f}, {gap:.4f} below the best "
                f"baseline ({best_name}, {best:.4f}), {sure}.")
    else:
        noise = (f", within seed noise (largest seed std {spread:.4f}): a tie" if np.isfinite(spread) and -gap <= spread
                 else f", more than the largest seed std ({spread:.4f})" if np.isfinite(spread) else "")
        text = (f"**The RegMix mixture did not win.** Its mean target loss is {regmix:.4f}; the best baseline "
                f"({best_name}) reached {best:.4f}, {-gap:.4f} lower{noise}. See 'Why it may lose' below.")
    return text, facts


def _figures(demo: "Demo", summary: pd.DataFrame, mixes: dict[str, Mixture], target: str) -> list[str]:
    fig_dir = demo.path("report")
    names = [n for n in ORDER if n in summary.index]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    vals = [summary.loc[n, target] for n in names]
    errs = [summary.loc[n, f"{target} (std)"] if summary.loc[n, "seeds"] > 1 else 0 for n in names]
    ax.bar(names, vals, yerr=errs, capsize=4, color=["tab:red" if n == "regmix" else "tab:gray" for n in names])
    lo = min(vals) - 3 * max(max(errs), 0.005)
    ax.set_ylim(lo, max(vals) + 3 * max(max(errs), 0.005))
    ax.set_ylabel("mean per-domain valid loss (nats)")
    ax.set_title("Target model: loss by training mixture (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(fig_dir / "target_loss.png", dpi=110)
    plt.close(fig)
    paths.append("target_loss.png")

    domains = mixes["natural"].names
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        w = [mixes[n].weight_of(d) for d in domains]
        ax.bar(np.arange(len(domains)) + i * width, w, width, label=n)
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains, rotation=30, ha="right")
    ax.set_ylabel("weight")
    ax.legend()
    ax.set_title("Mixture weights")
    fig.tight_layout()
    fig.savefig(fig_dir / "weights.png", dpi=110)
    plt.close(fig)
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


def write_demo_report(demo: "Demo") -> str:
    from regmix_plugin.demo.run import TARGET, summarize_targets, target_table

    out = demo.path("report")
    out.mkdir(parents=True, exist_ok=True)
    df = target_table(demo)
    summary = summarize_targets(df)
    mixes = {n: Mixture.load(next(demo.path("target_mixtures").glob(f"{n}-*.json"))) for n in ORDER}
    verdict, facts = _verdict(summary, TARGET)
    held_text, held_facts = _heldout_check(demo, TARGET)
    check_text, check_facts = _rank_check(demo, TARGET)
    figs = _figures(demo, summary, mixes, TARGET)
    model = json.loads(demo.path("model", "model.json").read_text())
    runs = read_runs(demo.path("runs.csv"))

    rank_text = _four_mixtures(demo, summary, facts, TARGET)

    per_domain = summary[[c for c in summary.columns if c.startswith("valid/")] + [TARGET]].copy()
    per_domain.columns = [c.replace("valid/", "").replace("/loss", "") for c in per_domain.columns]
    per_domain.index.name = "mixture"
    weights = pd.DataFrame({n: [m.weight_of(d) for d in mixes["natural"].names] for n, m in mixes.items()},
                           index=mixes["natural"].names).T
    weights.index.name = "mixture"
    timings = _timings(demo)
    cv = pd.DataFrame(model.get("cv", [])).set_index("predictor") if model.get("cv") else pd.DataFrame()

    lines = [
        "# RegMix demo report",
        "",
        verdict,
        "",
        f"Target: `{TARGET}`, the mean over domains of the per-domain validation loss of the target model "
        f"({demo.cfg.target_config.name}) trained on each mixture with seeds {demo.cfg.target_seeds}. "
        f"The proxies ({demo.cfg.proxy_config.name}) were trained on {len(runs)} mixtures.",
        "",
        "## Target-scale results (mean over seeds)",
        "",
        _md_table(per_domain),
        "",
        f"Seeds per mixture: {int(summary['seeds'].min())}; std of the target loss over seeds: "
        + ", ".join(f"{n} {summary.loc[n, TARGET + ' (std)']:.4f}" for n in summary.index),
        "",
        "![target loss](target_loss.png)",
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
        "## Use it on a GPU cluster",
        "",
        "```bash",
        megatron_launch_line(demo),
        "```",
        "",
    ]
    md = "\n".join(lines)
    atomic_write_text(out / "demo.md", md)
    import markdown

    html = markdown.markdown(md, extensions=["tables", "fenced_code"])
    atomic_write_text(out / "demo.html", f"<!doctype html><meta charset='utf-8'><title>RegMix demo</title>\n{html}\n")
    record = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
              for k, v in {**facts, **held_facts, **check_facts}.items()}
    atomic_write_json(out / "demo.json", {**record, "figures": figs})
    return "RegMix won" if facts["gap"] > 0 else "RegMix did not win"


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

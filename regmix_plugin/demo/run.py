"""`regmix demo`: the whole RegMix loop on CPU on real text, each stage a `regmix` command.

Stages (each prints the command it runs, so the demo doubles as a tutorial):

1. text        extract documents from Debian packages and the Python stdlib (``sources.py``)
2. corpus      ``regmix corpus build``: one train + held-out .bin/.idx pair per domain, and a second corpus
               of evaluation sets that are never trained on (the default target, DECISIONS 49)
3. synthesize  ``regmix synthesize``: proxy mixtures around the token prior, plus a held-out set
4. sweep       ``regmix sweep``: train a tiny megatron-core proxy on every mixture (local backend)
5. collect     ``regmix collect``: one runs table
6. fit         ``regmix fit --predictor auto``: cross-validated choice of predictor
7. optimize    ``regmix optimize``: the mixture with the best predicted target -> regmix.json
8. target      ``regmix sweep``: a larger model on the chosen, natural, uniform and best-proxy mixtures
9. rank check  ``regmix sweep`` + ``regmix scale rank-check``: the held-out mixtures at the target scale too,
               to measure whether the proxies rank mixtures as the larger model does; and the four
               evaluated mixtures at proxy scale, to see whether the chosen one wins there
10. report     markdown + HTML + PNGs with the verdict

A rerun reuses finished work: the corpus is cached by a digest of its settings, sweeps skip finished runs,
and the cheap stages (collect, fit, optimize, report) are rerun every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from regmix_plugin.demo.config import DemoConfig
from regmix_plugin.demo.sources import EVAL_SOURCES, available_sources
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json, atomic_write_text
from regmix_plugin.mixture import Mixture
from regmix_plugin.table import domains as table_domains
from regmix_plugin.table import loss_column, read_runs, write_runs

# What the demo minimises (DemoConfig.target): the runs-table column it adds, and the same quantity as a
# `regmix fit --target` expression, written as a mean of columns so that `auto` also scores one law per
# column, summed (fit/percolumn.py), beside one model of the mean.
TARGETS = {
    "eval": ("target/eval_loss", "mean(valid/eval_*/loss)"),  # evaluation sets, never trained on
    "train-mean": ("target/mean_valid_loss", "mean(valid/*/loss)"),  # the training domains' own losses
}
TARGET = TARGETS["eval"][0]
BASELINES = ("natural", "uniform", "best-proxy")
STAGES = 10


class Demo:
    def __init__(self, cfg: DemoConfig, log: Callable[..., None] = print):
        self.cfg = cfg
        self.out = cfg.out.resolve()
        self.log = log
        self.timings: dict[str, dict] = {}
        self.target, self.fit_target = TARGETS[cfg.target]

    # ---- plumbing ------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def regmix(self, *args: str) -> None:
        """Run one `regmix` subcommand in a fresh process, echoing it like a tutorial would.

        Output streams live (progress bars included); library start-up noise is filtered out.
        """
        shown = " ".join(shlex.quote(str(a)).replace(str(self.out) + "/", "") for a in args)
        self.log(f"  $ regmix {shown}")
        proc = subprocess.Popen([sys.executable, "-m", "regmix_plugin", *map(str, args)], cwd=self.out,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        buf = b""
        while chunk := proc.stdout.read1(4096):
            buf += chunk
            # tqdm redraws with \r; forward those as in-place updates, whole lines as lines.
            while (cut := max(buf.rfind(b"\n"), buf.rfind(b"\r"))) >= 0:
                head, buf = buf[: cut + 1], buf[cut + 1:]
                for piece in re.split(rb"(?<=[\r\n])", head):
                    text = piece.decode("utf-8", "replace")
                    if text.strip() and not _NOISE.search(text):
                        self.log("    " + text.rstrip("\r\n"), end="\r" if text.endswith("\r") else "\n")
        if buf.strip() and not _NOISE.search(buf.decode("utf-8", "replace")):
            self.log("    " + buf.decode("utf-8", "replace").rstrip())
        if proc.wait() != 0:
            raise RegmixError(f"demo: `regmix {args[0]}` failed with exit code {proc.returncode}; see the output above")

    def stage(self, name: str, title: str, fn: Callable[[], str | None]) -> None:
        self.log(f"\n[{len(self.timings) + 1}/{STAGES}] {title}")
        t0, cpu0, load = time.perf_counter(), _cpu_seconds(), os.getloadavg()[0]
        note = fn()
        dt = time.perf_counter() - t0
        # CPU time (user + sys of this process and every finished child) beside the wall time: on a shared
        # machine the wall time says how busy the machine was, the CPU time what the stage cost.
        self.timings[name] = {"seconds": round(dt, 2), "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
                              "load_before": round(load, 2), "note": note or ""}
        self.log(f"  ({dt:.1f} s{'; ' + note if note else ''})")
        atomic_write_json(self.path("timings.json"), self.timings)

    # ---- stages --------------------------------------------------------------------------------
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage("text", "Extract real text from installed packages", self.extract_text)
        self.stage("corpus", "Build the corpus (.bin/.idx per domain, held-out validation)", self.build_corpus)
        self.stage("synthesize", "Synthesize proxy mixtures", self.synthesize)
        self.stage("sweep", "Train a tiny megatron-core proxy on every mixture", self.proxy_sweep)
        self.stage("collect", "Collect the runs into one table", self.collect)
        self.stage("fit", "Fit predictors, choose one by cross-validation", self.fit)
        self.stage("optimize", "Search the simplex for the best predicted mixture", self.optimize)
        self.stage("target", "Train the larger target model on the chosen mixture and baselines", self.target_sweep)
        self.stage("rank_check", "Train the target model on the held-out mixtures: do proxies rank like it?",
                   self.rank_check)
        from regmix_plugin.demo.report import write_demo_report

        self.stage("report", "Write the report", lambda: write_demo_report(self))
        return self.path("report", "demo.md")

    @property
    def uses_eval_sets(self) -> bool:
        return self.cfg.target == "eval"

    def extract_text(self) -> str:
        sources = available_sources(self.cfg.domains, log=lambda m: self.log("  " + m))
        if len(sources) < 2:
            raise RegmixError("demo: fewer than 2 text sources found; run scripts/install_system_packages.sh as root")
        evals = available_sources(log=lambda m: self.log("  " + m), sources=EVAL_SOURCES) if self.uses_eval_sets else []
        if self.uses_eval_sets and not evals:
            raise RegmixError("demo: no evaluation set found for --target eval; run scripts/install_system_packages.sh "
                              "as root, or give --target train-mean")
        note = f"{len(sources)} domains" + (f", {len(evals)} evaluation sets" if evals else "")
        reused = [self._write_text("text", sources), self._write_text("text_eval", evals) if evals else True]
        return "reused" if all(reused) else note

    def _write_text(self, folder: str, sources: list) -> bool:
        """One text file per source in ``folder``; True when the folder already held these sources."""
        digest = _digest(*[(s.domain, s.max_bytes) for s in sources])
        stamp = self.path(folder, "digest")
        if stamp.is_file() and stamp.read_text() == digest:
            return True
        for stale in self.path(folder).glob("*.txt"):
            stale.unlink()  # a source dropped since the last run must not stay in the corpus
        for s in sources:
            # One document per paragraph in the text file: blank lines inside a document are folded.
            docs = [re.sub(r"\n\s*\n", "\n", d) for d in s.read()]
            atomic_write_text(self.path(folder, f"{s.domain}.txt"), "\n\n".join(docs) + "\n")
            self.log(f"  {s.domain:<15} {len(docs):>6} documents  {s.description}")
        atomic_write_text(stamp, digest)
        return False

    def build_corpus(self) -> str:
        built = [self._build_corpus("text", "corpus", self.cfg.valid_fraction)]
        if self.uses_eval_sets:
            # The evaluation sets' own corpus: only its held-out part is read (whole, by every run), so a larger
            # share is held out than for training domains; the rest is never used.
            built.append(self._build_corpus("text_eval", "eval_corpus", EVAL_VALID_FRACTION))
        return "reused" if not any(built) else None

    def _build_corpus(self, text: str, corpus: str, valid_fraction: float) -> bool:
        digest = self.path(text, "digest").read_text()
        stamp = self.path(corpus, "source-digest")
        if stamp.is_file() and stamp.read_text() == f"{digest}:{valid_fraction}":
            return False
        args = ["corpus", "build", "--out", self.path(corpus), "--force", "--doc-split", "paragraph",
                "--valid-fraction", valid_fraction]
        for txt in sorted(self.path(text).glob("*.txt")):
            args += ["--domain", f"{txt.stem}={txt}"]
        self.regmix(*args)
        atomic_write_text(stamp, f"{digest}:{valid_fraction}")
        return True

    def run_config(self, source: Path) -> Path:
        """The proxy or target config the runs use: ``source`` itself, or with the evaluation sets added
        (``eval.sets``) when the target is the evaluation sets."""
        if not self.uses_eval_sets:
            return source
        cfg = yaml.safe_load(source.read_text()) or {}
        corpus = json.loads(self.path("eval_corpus", "corpus.json").read_text())
        cfg.setdefault("eval", {})["sets"] = {
            name: str(self.path("eval_corpus", d["valid_prefix"])) for name, d in sorted(corpus["domains"].items())}
        # The sets' text digest is part of the file, so runs scored on other text are never reused (the run
        # folders are named by a digest of this file).
        stamp = self.path("eval_corpus", "source-digest").read_text()
        text = (f"# {source.name} with the demo's evaluation sets (docs/DECISIONS.md 49; text {stamp})\n"
                + yaml.safe_dump(cfg, sort_keys=False))
        path = self.path("configs", source.name)
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
        return path

    # Outputs are named by a digest of what produced them, so a rerun with other settings never reuses
    # runs made with the old ones (and a rerun with the same settings reuses everything).
    @property
    def mixtures_dir(self) -> Path:
        corpus = self.path("corpus", "source-digest").read_text()
        return self.path("mixtures", _digest(corpus, self.cfg.proxies, self.cfg.heldout, self.cfg.seed))

    @property
    def proxy_config(self) -> Path:
        return self.run_config(self.cfg.proxy_config)

    @property
    def target_config(self) -> Path:
        return self.run_config(self.cfg.target_config)

    @property
    def proxy_dir(self) -> Path:
        return self.path("proxy", _digest(self.mixtures_dir.name, self.proxy_config.read_text(), _env_key()))

    def target_dir(self, seed: int) -> Path:
        # Run ids carry each mixture's hash (see target_sweep), so unchanged baselines are reused.
        return self.path("target", _digest(self.target_config.read_text(), _env_key()), f"seed{seed}")

    def synthesize(self) -> str | None:
        if (self.mixtures_dir / "manifest.json").is_file():
            return "reused"
        self.regmix("synthesize", self.path("corpus", "natural.json"), "--out", self.mixtures_dir,
                    "--n", self.cfg.proxies, "--heldout", self.cfg.heldout, "--seed", self.cfg.seed)
        return None

    def _study(self, name: str, mixtures: Path, config: Path, out: Path, extra: tuple[str, ...] = ()) -> Path:
        from regmix_plugin.sweep.study import trainer_command, write_study

        study = {
            "name": name,
            "base_mixture": str(self.path("corpus", "natural.json")),
            "proxy_config": str(config),
            "mixtures": str(mixtures),
            "out": str(out),
            "command": trainer_command(*extra),
            "env": run_env(),
            "runs": {"retries": 1},
            "backend": "local",
            "local": {"max_concurrent": self.cfg.workers},
        }
        return write_study(self.path(f"study-{name}.yaml"), study)

    def proxy_sweep(self) -> str:
        study = self._study("proxy", self.mixtures_dir, self.proxy_config, self.proxy_dir)
        self.regmix("sweep", study)
        return f"{self.cfg.proxies + self.cfg.heldout} runs"

    def collect(self) -> str:
        self.regmix("collect", self.proxy_dir, "--out", self.path("runs_all.csv"))
        df = with_target(read_runs(self.path("runs_all.csv")), self.cfg.target)
        done = df[df["status"] == "completed"]
        heldout = done["split"] == "heldout"  # `regmix synthesize` marks its held-out mixtures
        write_runs(done[~heldout], self.path("runs.csv"))
        write_runs(done[heldout], self.path("runs_heldout.csv"))
        failed = len(df) - len(done)
        return f"{int((~heldout).sum())} fit runs, {int(heldout.sum())} held-out runs, {failed} not completed"

    def fit(self) -> None:
        self.regmix("fit", "--runs", self.path("runs.csv"), "--target", self.fit_target,
                    "--predictor", self.cfg.predictor, "--out", self.path("model"))
        held = read_runs(self.path("runs_heldout.csv"))
        if len(held):
            cols = ["run_id"] + [c for c in held.columns if c.startswith("weight/")]
            atomic_write_text(self.path("heldout_mixtures.csv"), held[cols].to_csv(index=False))
            self.regmix("predict", "--model", self.path("model"), "--mixtures", self.path("heldout_mixtures.csv"),
                        "--out", self.path("heldout_predictions.csv"))
        return None

    def optimize(self) -> None:
        self.regmix("optimize", "--model", self.path("model"), "--base-mixture", self.path("corpus", "natural.json"),
                    "--out", self.path("regmix.json"))
        self.regmix("show", self.path("regmix.json"))
        return None

    def target_mixtures(self) -> dict[str, Mixture]:
        natural = Mixture.load(self.path("corpus", "natural.json"))
        runs = read_runs(self.path("runs.csv"))
        best = runs.loc[runs[self.target].idxmin()]
        n = len(natural.names)
        # Fresh files with weights that already sum to 1, so no "normalised from" note follows them around.
        mixes = {
            "regmix": Mixture.load(self.path("regmix.json")),
            "natural": Mixture.from_weights(dict(zip(natural.names, natural.weights)), template=natural, name="natural"),
            "uniform": Mixture.from_weights({d: 1.0 / n for d in natural.names}, template=natural, name="uniform"),
            "best-proxy": Mixture.from_weights({d: float(best[f"weight/{d}"]) for d in natural.names},
                                               template=natural, name=f"best-proxy-{best['run_id']}"),
        }
        return mixes

    def target_sweep(self) -> str:
        folder = self.path("target_mixtures")
        mixes = self.target_mixtures()
        for stale in folder.glob("*.json"):
            stale.unlink()  # the study runs every *.json here: only the current four
        stems = {}
        for name, mix in mixes.items():
            placed = mix.rebased(folder)
            stems[name] = f"{name}-{placed.content_hash()[:8]}"
            placed.save(folder / f"{stems[name]}.json")
        # The predictor's proxy-scale view of the same four mixtures, for the rank check in the report.
        table = pd.DataFrame([{"run_id": n, **{f"weight/{d.name}": d.weight for d in m.domains}} for n, m in mixes.items()])
        atomic_write_text(self.path("target_mixtures.csv"), table.to_csv(index=False))
        self.regmix("predict", "--model", self.path("model"), "--mixtures", self.path("target_mixtures.csv"),
                    "--out", self.path("target_mixture_predictions.csv"))
        n = 0
        for seed in self.cfg.target_seeds:
            out = self.target_dir(seed)
            study = self._study(f"target-seed{seed}", folder, self.target_config, out,
                                extra=("--set", f"train.seed={seed}"))
            self.regmix("sweep", study)
            self.regmix("collect", *[out / "runs" / stem for stem in stems.values()],
                        "--out", self.path(f"target_runs_seed{seed}.csv"))
            n += len(stems)
        return f"{n} runs"

    def collect_with_target(self, *sources: Path, out: Path) -> None:
        """`regmix collect` into ``out``, then add the demo's target column to it."""
        self.regmix("collect", *sources, "--out", out)
        write_runs(with_target(read_runs(out), self.cfg.target), out)

    def rank_check(self) -> str:
        """The held-out proxy mixtures again, at the target scale (first target seed), and the rank check
        between the two scales: the direct measurement of RegMix's rank-invariance assumption."""
        held = self.mixtures_dir / "heldout"
        if self.cfg.heldout < 3 or not held.is_dir():
            return "skipped: a rank correlation needs at least 3 held-out mixtures"
        seed = self.cfg.target_seeds[0]
        out = self.path("target", _digest(self.target_config.read_text(), _env_key()), f"heldout-seed{seed}")
        study = self._study(f"target-heldout-seed{seed}", held, self.target_config, out,
                            extra=("--set", f"train.seed={seed}"))
        self.regmix("sweep", study)
        self.collect_with_target(out, out=self.path("target_heldout_runs.csv"))
        metrics = [loss_column(d) for d in table_domains(read_runs(self.path("runs_heldout.csv")))]
        metrics += eval_set_columns(read_runs(self.path("runs_heldout.csv"))) if self.uses_eval_sets else []
        metrics += [self.target]
        self.regmix("scale", "rank-check", self.path("runs_heldout.csv"), self.path("target_heldout_runs.csv"),
                    *[a for m in metrics for a in ("--metric", m)], "--out", self.path("rank_check.json"))
        # The four evaluated mixtures at proxy scale too: whether the chosen mixture already wins there (is
        # the regression right?) or only loses at the target scale (does the ranking transfer?). The best
        # proxy mixture is a proxy run already, with the same config and seed, and runs are deterministic
        # (a retrained copy matched it to the last digit), so that run is read back instead of trained again.
        out = self.path("proxy_eval", _digest(self.proxy_config.read_text(), _env_key()))
        folder = self.path("proxy_eval_mixtures")
        for stale in folder.glob("*.json"):
            stale.unlink()  # the study runs every *.json here
        evaluated = sorted(self.path("target_mixtures").glob("*.json"))
        best = next(p for p in evaluated if p.stem.startswith("best-proxy-"))
        for p in evaluated:
            if p != best:
                Mixture.load(p).rebased(folder).save(folder / p.name)
        self.regmix("sweep", self._study("proxy-eval", folder, self.proxy_config, out))
        runs = read_runs(self.path("runs.csv"))
        best_id = str(runs.loc[runs[self.target].idxmin(), "run_id"])
        self.collect_with_target(*[out / "runs" / p.stem for p in evaluated if p != best],
                                 self.proxy_dir / "runs" / best_id, out=self.path("proxy_eval_runs.csv"))
        table = read_runs(self.path("proxy_eval_runs.csv"))
        table.loc[table["run_id"] == best_id, "run_id"] = best.stem
        write_runs(table, self.path("proxy_eval_runs.csv"))
        return f"{self.cfg.heldout} target-scale runs, {len(evaluated) - 1} proxy runs (+1 reused)"


def run_env() -> dict[str, str]:
    """The environment of every demo run: one thread, and the kernels pinned to one instruction set so that
    every x86-64 CPU with AVX2 computes the same numbers (demo/numerics.py, DECISIONS 65)."""
    from regmix_plugin.demo.numerics import pinned_isa_env

    return {"OMP_NUM_THREADS": "1", **pinned_isa_env()}


def _env_key() -> str:
    # Part of the run folders' digests: runs made with other kernels (before the pin, or on a CPU where it
    # cannot be set) are never reused beside pinned ones.
    return json.dumps(run_env(), sort_keys=True)


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:10]


# Library start-up noise (Transformer Engine/apex/CUDA warnings) that says nothing about the demo.
_NOISE = re.compile(r"(Warning|warn\(|^W\d{4}|No CUDA runtime|IS DEPRECATED|apex|Transformer Engine|warnings\.warn)")


EVAL_VALID_FRACTION = 0.2  # share of each evaluation set held out (and read whole by every run)


def eval_set_columns(df: pd.DataFrame) -> list[str]:
    """The loss columns of the demo's evaluation sets (names start with "eval_", see sources.EVAL_SOURCES)."""
    return sorted(c for c in df.columns if c.startswith("valid/eval_") and c.endswith("/loss"))


def with_target(df: pd.DataFrame, target: str = "eval") -> pd.DataFrame:
    """Add the demo's target column (TARGETS): the mean loss over the evaluation sets, or over the training
    domains' own validation sets."""
    column = TARGETS[target][0]
    cols = eval_set_columns(df) if target == "eval" else [loss_column(d) for d in table_domains(df)]
    if not cols:
        raise RegmixError(f"demo: the runs have no {'valid/eval_*/loss' if target == 'eval' else 'valid/<domain>/loss'}"
                          " columns to compute the target from; rerun the sweep")
    df[column] = df[cols].mean(axis=1)
    return df


def target_table(demo: Demo) -> pd.DataFrame:
    """Per-domain and target loss of each target-scale run, labelled by mixture and seed."""
    frames = []
    for seed in demo.cfg.target_seeds:
        df = read_runs(demo.path(f"target_runs_seed{seed}.csv"))
        df["seed"] = seed
        frames.append(df)
    df = with_target(pd.concat(frames, ignore_index=True), demo.cfg.target)
    df["mixture"] = df["run_id"].str.rsplit("-", n=1).str[0]  # "<name>-<hash>" -> name
    return df


def summarize_targets(df: pd.DataFrame, target: str = TARGET) -> pd.DataFrame:
    cols = [c for c in df.columns if c.startswith("valid/") or c == target]
    g = df[df["status"] == "completed"].groupby("mixture")[cols]
    mean, std, n = g.mean(), g.std(ddof=1), g.size()
    mean["seeds"] = n
    mean[f"{target} (std)"] = std[target] if len(df) else np.nan
    return mean.sort_values(target)

"""Real text and real proxy runs for the scaling and continual-training tests.

The corpus is real text that every Python install carries (`regmix_plugin.data.stdlib_text`), so the tests
need no Debian package: ``prose`` is the English reference documentation in ``pydoc_data.topics`` and
``code`` is the source of standard-library modules.
"""

from __future__ import annotations

import json
from pathlib import Path

from regmix_plugin.mixture import Mixture
from regmix_plugin.data.stdlib_text import build_text_corpus

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "megatron_configs" / "proxy-tiny-cpu.yaml"

# A proxy small enough for ~100 steps in a few seconds on one core, with the usual cosine schedule.
FAST = [
    "model.hidden_size=32", "model.ffn_hidden_size=64", "model.num_attention_heads=2", "model.seq_length=64",
    "train.global_batch_size=4", "train.micro_batch_size=4", "train.log_every=10", "train.progress=false",
    "train.threads=1", "eval.samples_per_domain=8", "eval.batch_size=8", "optim.warmup_steps=5",
    "optim.lr=3e-3", "optim.min_lr=3e-4", "optim.lr_schedule=cosine", "metrics.tensorboard=false",
]
# Continual runs re-warm to a lower peak and decay again, as continual pretraining usually does; a run
# that ends at a high learning rate has a final loss too noisy to compare replay proportions.
CONTINUAL = ["optim.lr=1e-3", "optim.min_lr=1e-4"]


def make_text_corpus(root: Path, max_bytes: int = 400_000) -> Path:
    """``root/corpus`` with domains prose and code (byte tokenizer); returns its natural.json."""
    return build_text_corpus(Path(root) / "corpus", max_bytes)


def mixture_file(natural: Path, name: str, weights: dict[str, float]) -> Path:
    """A mixture over the corpus of ``natural`` (domains absent from ``weights`` get 0: still evaluated)."""
    nat = Mixture.load(natural)
    mix = Mixture.from_weights({n: weights.get(n, 0.0) for n in nat.names}, template=nat, name=name)
    return mix.save(Path(natural).parent / f"{name}.json")


def train_args(mixture: Path, run_dir: Path, steps: int, eval_every: int, *extra: str) -> list[str]:
    args = ["train", "--mixture", str(mixture), "--config", str(TINY_CONFIG), "--run-dir", str(run_dir)]
    for o in [*FAST, f"train.steps={steps}", f"eval.every={eval_every}"]:
        args += ["--set", o]
    return args + list(extra)


def outcome(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "outcome.json").read_text())

"""The proxy trainer on real megatron-core (GPTModel, gloo) and a tiny real corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from proxy_helpers import TEST_OVERRIDES, TINY_CONFIG, make_corpus, run_cli, train_args, write_mixture

from regmix_plugin.cli import main as cli_main
from regmix_plugin.metrics import read_metrics
from regmix_plugin.proxy import checkpoint
from regmix_plugin.proxy.config import ProxyConfig
from regmix_plugin.proxy.trainer import train
from regmix_plugin.schedule import Schedule

DOMAINS = ("web", "code", "books")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, DOMAINS)
    # "books" gets weight 0: it must still be evaluated.
    return write_mixture(root, "mix", {"web": 0.7, "code": 0.3})


def _cfg(*extra: str) -> ProxyConfig:
    return ProxyConfig.load(TINY_CONFIG, [*TEST_OVERRIDES, *extra])


def _values(records):
    """Metric records without wall-clock time: what must match between equivalent runs."""
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _weights(run_dir):
    ckpt = checkpoint.find(run_dir / "checkpoints")
    with np.load(ckpt / "model.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """One uninterrupted 12-step run that other tests compare against."""
    run_dir = tmp_path_factory.mktemp("baseline")
    outcome = train(_cfg("checkpoint.every=6"), Schedule.single(corpus), run_dir)
    assert outcome.status == "completed", outcome
    return run_dir


def test_run_dir_layout_and_metrics(baseline):
    outcome = json.loads((baseline / "outcome.json").read_text())
    assert outcome == {"status": "completed", "reason": None, "final_step": 12, "tokens": 12 * 4 * 32}
    records = read_metrics(baseline / "metrics.jsonl")
    train_lines = [r for r in records if "train/loss" in r]
    eval_lines = [r for r in records if any(k.startswith("valid/") for k in r)]
    assert [r["step"] for r in train_lines] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in eval_lines] == [6, 12]
    for r in records:
        assert r["tokens"] == r["step"] * 4 * 32
        assert r["mixture_name"] == "mix" and len(r["mixture_hash"]) == 16
    for r in eval_lines:
        assert sorted(k for k in r if k.startswith("valid/")) == sorted(f"valid/{d}/loss" for d in DOMAINS)
    # Training lowers the loss from ln(257) = 5.55, on the trained domains (books has weight 0).
    assert train_lines[-1]["train/loss"] < train_lines[0]["train/loss"] < math.log(257) + 0.1
    assert all(eval_lines[1][f"valid/{d}/loss"] < eval_lines[0][f"valid/{d}/loss"] for d in ("web", "code"))
    cfg = yaml.safe_load((baseline / "config.yaml").read_text())
    assert cfg["model"]["hidden_size"] == 32 and cfg["run"]["world_size"] == 1 and cfg["run"]["parameters"] > 0
    assert list((baseline / "tb").iterdir())
    assert sorted(p.name for p in (baseline / "checkpoints").iterdir()) == ["latest", "step_00000012"]


def test_same_seed_reruns_are_bit_identical(corpus, baseline, tmp_path):
    outcome = train(_cfg("checkpoint.every=6"), Schedule.single(corpus), tmp_path)
    assert outcome.status == "completed"
    assert _values(read_metrics(tmp_path / "metrics.jsonl")) == _values(read_metrics(baseline / "metrics.jsonl"))
    a, b = _weights(tmp_path), _weights(baseline)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_crash_is_recorded_and_resume_matches_uninterrupted_run(corpus, baseline, tmp_path):
    # Crash at step 9: the checkpoint of step 6 survives, and the run is recorded as failed.
    code = cli_main(train_args(corpus, tmp_path, "--set", "checkpoint.every=6", "--set", "fault.crash_at_step=9"))
    assert code == 1
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "failed" and outcome["final_step"] == 8
    assert outcome["reason"].startswith("exception: RuntimeError: injected crash at step 9")
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")) == 8

    assert cli_main(train_args(corpus, tmp_path, "--set", "checkpoint.every=6", "--resume")) == 0
    assert json.loads((tmp_path / "outcome.json").read_text())["status"] == "completed"
    # Lines 7-8 of the crashed attempt were dropped and rewritten: the log equals the uninterrupted one.
    assert _values(read_metrics(tmp_path / "metrics.jsonl")) == _values(read_metrics(baseline / "metrics.jsonl"))
    a, b = _weights(tmp_path), _weights(baseline)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_the_run(corpus, tmp_path):
    assert cli_main(train_args(corpus, tmp_path, "--set", "fault.nan_at_step=3")) == 1
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome == {"status": "failed", "reason": "nan loss at step 3", "final_step": 2, "tokens": 2 * 4 * 32}


def test_divergence_from_a_huge_learning_rate_is_caught(corpus, tmp_path):
    # No injected fault: lr=1e30 blows the weights up after one update and the loss becomes non-finite.
    assert cli_main(train_args(corpus, tmp_path, "--set", "optim.lr=1e30", "--set", "optim.warmup_steps=0",
                               "--set", "optim.grad_clip=0")) == 1
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "failed"
    assert outcome["reason"].split(" at step ")[0] in ("nan loss", "inf loss")
    assert outcome["final_step"] >= 1


def test_init_from_loads_weights_only(corpus, baseline, tmp_path):
    """Continual pretraining: weights from the base run, step and optimizer from scratch."""
    outcome = train(_cfg("train.steps=2", "eval.every=1", "eval.at_end=false"), Schedule.single(corpus), tmp_path,
                    init_from=str(baseline))
    assert outcome.status == "completed" and outcome.final_step == 2
    records = read_metrics(tmp_path / "metrics.jsonl")
    first_eval = next(r for r in records if "valid/web/loss" in r)
    base_final = [r for r in read_metrics(baseline / "metrics.jsonl") if "valid/web/loss" in r][-1]
    assert first_eval["step"] == 1
    # One more (warmup-sized) step from the base weights stays near the base loss, far below a fresh model.
    assert abs(first_eval["valid/web/loss"] - base_final["valid/web/loss"]) < 0.1
    assert first_eval["valid/web/loss"] < math.log(257) - 0.3


def test_bad_inputs_are_one_line_errors(corpus, tmp_path, capsys):
    assert cli_main(train_args(corpus, tmp_path, "--set", "train.steps=-3")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "regmix: error: train.steps: -3 is out of range; give a number > 0"
    assert cli_main(["train", "--config", str(TINY_CONFIG), "--run-dir", str(tmp_path)]) == 2
    assert "--mixture/--schedule" in capsys.readouterr().err
    assert cli_main(train_args(corpus, tmp_path, "--set", "train.global_batch_size=6")) == 2
    assert "train.global_batch_size: 6 is not a multiple" in capsys.readouterr().err
    assert json.loads((tmp_path / "outcome.json").read_text())["status"] == "failed"


def test_data_parallel_matches_single_process(corpus, baseline, tmp_path):
    """DP=2 (torchrun, two gloo ranks) computes the same per-domain losses as DP=1."""
    proc = run_cli(train_args(corpus, tmp_path, "--set", "checkpoint.every=6", "--set", "train.micro_batch_size=2"), nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dp2 = read_metrics(tmp_path / "metrics.jsonl")
    dp1 = read_metrics(baseline / "metrics.jsonl")
    assert [r["step"] for r in dp2] == [r["step"] for r in dp1]
    for a, b in zip(dp1, dp2):
        for k, v in a.items():
            if k.startswith(("valid/", "train/")):
                assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["run"]["world_size"] == 2


@pytest.mark.gpu
def test_trains_on_gpu(corpus, tmp_path):
    outcome = train(_cfg("train.device=cuda"), Schedule.single(corpus), tmp_path)
    assert outcome.status == "completed", outcome
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["run"]["device"].startswith("cuda")


def test_evaluation_sets_are_evaluated_whole_and_never_trained_on(corpus, tmp_path, capsys):
    """eval.sets (DECISIONS 39, 49): a set beside the mixture is scored at every evaluation, read whole, and
    changes nothing else: the same run without it has the same training and domain losses."""
    from regmix_plugin.data.blend import BlendConfig, build_datasets
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.proxy.trainer import _with_eval_sets

    root = corpus.parent
    two = Mixture.from_weights({"web": 0.7, "code": 0.3}, template=Mixture.load(corpus), name="two")
    mix = two.save(root / "two.json")
    books = str(root / "books" / "valid")
    plain = train(_cfg(), Schedule.single(mix), tmp_path / "plain")
    with_set = train(_cfg("eval.sets={held_books: %s}" % books), Schedule.single(mix), tmp_path / "set")
    assert plain.status == with_set.status == "completed"
    a, b = read_metrics(tmp_path / "plain" / "metrics.jsonl"), read_metrics(tmp_path / "set" / "metrics.jsonl")
    evals = [r for r in b if "valid/held_books/loss" in r]
    assert [r["step"] for r in evals] == [6, 12] and all(math.isfinite(r["valid/held_books/loss"]) for r in evals)
    drop = lambda rs: [{k: v for k, v in r.items() if k != "time" and "held_books" not in k} for r in rs]  # noqa: E731
    assert drop(a) == drop(b)  # same training, same domain losses: the set is only evaluated

    # Read whole: every held-out sequence, not eval.samples_per_domain (6) of them.
    blend = BlendConfig(seq_length=32, train_samples=8, valid_samples_per_domain=6, valid_whole=("held_books",))
    ds = build_datasets(_with_eval_sets(Mixture.load(mix), {"held_books": books}), blend)
    assert len(ds.valid["web"]) == 6 and len(ds.valid["held_books"]) > 6
    assert ds.train_counts()["held_books"] == 0

    # Bad input: one line naming the field.
    assert cli_main(train_args(mix, tmp_path / "bad", "--set", "eval.sets={web: %s}" % books)) == 2
    assert capsys.readouterr().err.strip().startswith("regmix: error: eval.sets.web: is also a training domain")
    assert cli_main(train_args(mix, tmp_path / "bad2", "--set", "eval.sets={held: /nope/x}")) == 2
    assert "eval.sets.held: /nope/x.bin does not exist" in capsys.readouterr().err
    assert cli_main(train_args(mix, tmp_path / "bad3", "--set", "eval.sets=[1, 2]")) == 2
    assert "eval.sets: expected a mapping" in capsys.readouterr().err

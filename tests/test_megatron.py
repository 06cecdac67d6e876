"""Megatron-LM integration against the real megatron.training parser and dataset code (CPU), plus GPU tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from proxy_helpers import REPO, make_corpus, write_mixture

from regmix_plugin.errors import ConfigError
from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.megatron.loss import per_domain_loss
from regmix_plugin.megatron.pretrain_gpt import prepare_argv
from regmix_plugin.schedule import Schedule

MODEL_FLAGS = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32",
    "--max-position-embeddings", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
    # NullTokenizer --vocab-size 257 has eod 256: the ids of the plugin's byte tokenizer.
    "--tokenizer-type", "NullTokenizer", "--vocab-size", "257",
]


@pytest.fixture
def parse(monkeypatch):
    """Parse a Megatron-LM command line with the plugin's flags; Megatron's globals are reset afterwards."""
    from megatron.training.arguments import parse_and_validate_args
    from megatron.training.global_vars import unset_global_variables

    def _parse(argv: list[str]):
        monkeypatch.setattr(sys, "argv", ["pretrain_gpt.py", *argv])
        unset_global_variables()
        return parse_and_validate_args(extra_args_provider=add_regmix_args)

    yield _parse
    unset_global_variables()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcorpus")
    make_corpus(root, ("web", "code", "books"), docs=24)
    return root


def test_real_parser_accepts_the_plugin_flags(parse, corpus):
    mix = str(corpus / "natural.json")
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix, "--regmix-metrics-dir", "/tmp/m",
                  "--regmix-valid-samples-per-domain", "8", "--no-regmix-per-domain-eval"])
    assert args.data_mixture_from == mix and args.regmix_metrics_dir == "/tmp/m"
    assert args.regmix_valid_samples_per_domain == 8 and args.regmix_per_domain_eval is False
    check_regmix_args(args)
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix])
    assert args.regmix_per_domain_eval is True and args.data_schedule_from is None


def test_conflicting_data_flags_are_one_line_errors(parse, corpus):
    mix = str(corpus / "natural.json")
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix, "--mock-data"])
    with pytest.raises(ConfigError, match="--mock-data: not allowed with --data-mixture-from"):
        check_regmix_args(args)
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", mix, "--data-path", "1.0", "/x/y"])
    with pytest.raises(ConfigError, match="--data-path: not allowed"):
        check_regmix_args(args)


def test_dataset_provider_builds_blend_and_per_domain_validation(parse, corpus):
    from regmix_plugin.megatron.datasets import train_valid_test_datasets_provider

    mix = write_mixture(corpus, "mega", {"web": 0.5, "code": 0.5})  # books: weight 0, still validated
    parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(mix), "--regmix-valid-samples-per-domain", "5"])
    train, valid, test = train_valid_test_datasets_provider([40, None, None])
    assert len(train) == 40 and test is None
    assert {train[i]["dataset_id"] for i in range(40)} == {0, 1}
    assert [valid[i]["dataset_id"] for i in range(len(valid))] == [0] * 5 + [1] * 5 + [2] * 5
    item = valid[0]
    assert item["tokens"].shape == (32,) and item["labels"].shape == (32,)


def test_tokenizer_mismatch_with_the_corpus_is_refused(parse, corpus):
    from regmix_plugin.data.tokenizer import TokenizerMismatchError
    from regmix_plugin.megatron.datasets import train_valid_test_datasets_provider

    flags = [f if f != "257" else "300" for f in MODEL_FLAGS]
    parse([*flags, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json")])
    with pytest.raises(TokenizerMismatchError, match="does not match the corpus tokenizer"):
        train_valid_test_datasets_provider([8, None, None])


def test_per_domain_loss_reduces_to_exact_domain_means():
    """[sum, count] entries summed over micro batches and DP ranks (as Megatron does) give exact means."""
    g = torch.Generator().manual_seed(0)
    names = ["web", "code", "books"]
    losses = torch.rand(8, 16, generator=g) * 5  # per-token losses of 8 sequences
    mask = (torch.rand(8, 16, generator=g) > 0.2).float()
    ids = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])  # books absent: it must still be reported (as [0, 0])
    reports = []
    for rank in range(2):  # 2 DP ranks x 2 micro batches of 2 sequences
        for mb in range(2):
            sl = slice(rank * 4 + mb * 2, rank * 4 + mb * 2 + 2)
            loss, num_tokens, report = per_domain_loss(mask[sl], ids[sl], losses[sl], names)
            assert loss.item() == pytest.approx((losses[sl] * mask[sl]).sum().item(), rel=1e-6)
            assert num_tokens.item() == int(mask[sl].sum().item())
            assert list(report) == ["lm loss"] + [f"valid/{n}/loss" for n in names]
            reports.append(report)
    for k, name in enumerate(names):
        total = torch.stack([r[f"valid/{name}/loss"] for r in reports]).sum(0)
        sel = ids == k
        if sel.any():
            direct = (losses[sel] * mask[sel]).sum() / mask[sel].sum()
            assert (total[0] / total[1]).item() == pytest.approx(direct.item(), rel=1e-6)
        else:
            assert total.tolist() == [0.0, 0.0]
    lm = torch.stack([r["lm loss"] for r in reports]).sum(0)
    assert (lm[0] / lm[1]).item() == pytest.approx(((losses * mask).sum() / mask.sum()).item(), rel=1e-6)
    # Training micro batches report the plain loss only.
    assert list(per_domain_loss(mask, ids, losses, None)[2]) == ["lm loss"]


def test_schedule_maps_to_phase_transition_iterations(parse, corpus, tmp_path):
    """Megatron's own phase arithmetic (get_train_valid_test_num_samples) matches Schedule.phase_bounds."""
    from megatron.training.training import get_train_valid_test_num_samples

    from regmix_plugin.megatron.datasets import mixture_for_iteration

    a = write_mixture(corpus, "phase_a", {"web": 1.0})
    b = write_mixture(corpus, "phase_b", {"code": 1.0})
    sched_path = tmp_path / "s.yaml"
    sched_path.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 4, mixture: {b}}}\n"
                          f"  - {{start: 9, mixture: {a}}}\n")
    argv = prepare_argv([*MODEL_FLAGS, "--train-samples", "48", "--data-schedule-from", str(sched_path)])
    assert argv[-3:] == ["--phase-transition-iterations", "4,9", "--full-validation"]
    args = parse(argv)
    check_regmix_args(args)
    assert args.phase_transition_iterations == [4, 9] and args.full_validation
    schedule = Schedule.load(sched_path)
    bounds = schedule.phase_bounds(48 // 4)
    for iteration in range(12):
        args.iteration = iteration
        start, end = bounds[schedule.phase_index(iteration)]
        assert get_train_valid_test_num_samples()[0] == (end - start) * 4
        assert mixture_for_iteration(args).name == ("phase_b" if 4 <= iteration < 9 else "phase_a")
    # Megatron 0.19 computes phase sizes from --train-samples; with --train-iters its arithmetic fails.
    args = parse(prepare_argv([*MODEL_FLAGS, "--train-iters", "12", "--data-schedule-from", str(sched_path)]))
    with pytest.raises(ConfigError, match="--train-samples"):
        check_regmix_args(args)


_PARSE_ONLY = """
import sys
import megatron.training.arguments as margs
margs.get_device_arch_version = lambda: 9  # the one GPU fact validation reads (Hopper); no GPU here
from regmix_plugin.megatron.args import add_regmix_args, check_regmix_args
from regmix_plugin.megatron.pretrain_gpt import prepare_argv
sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:])]
a = margs.parse_and_validate_args(extra_args_provider=add_regmix_args)
check_regmix_args(a)
print("PARSED", a.tensor_model_parallel_size, a.pipeline_model_parallel_size, a.full_validation, a.data_mixture_from)
"""


def test_example_tp2_pp2_arguments_pass_megatron_validation(corpus, tmp_path):
    """The example's exact command line, through the real parser and validation (the launch needs 4 GPUs)."""
    fake = tmp_path / "python"
    (tmp_path / "parse_only.py").write_text(_PARSE_ONLY)
    # Stands in for python: drops "-m torch.distributed.run --standalone --nproc-per-node N -m <module>".
    fake.write_text(f"#!/usr/bin/env bash\nshift 7\nexec {sys.executable} {tmp_path / 'parse_only.py'} \"$@\"\n")
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), MIXTURE=str(corpus / "natural.json"), OUT=str(tmp_path / "out"),
               WORLD_SIZE="4", RANK="0", PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", str(REPO / "examples" / "megatron_tp2_pp2.sh")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"PARSED 2 2 True {corpus / 'natural.json'}" in proc.stdout


@pytest.mark.gpu
def test_pretrain_gpt_runs_on_gpu(corpus, tmp_path):
    """The entry point end to end on one GPU (skipped without CUDA)."""
    env = dict(os.environ, CUDA_DEVICE_MAX_CONNECTIONS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
           "-m", "regmix_plugin.megatron.pretrain_gpt", *MODEL_FLAGS, "--train-iters", "4", "--eval-interval", "2",
           "--data-mixture-from", str(corpus / "natural.json"), "--regmix-valid-samples-per-domain", "4",
           "--save", str(tmp_path / "ckpt"), "--transformer-impl", "local", "--bf16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from regmix_plugin.metrics import read_metrics

    recs = read_metrics(tmp_path / "ckpt" / "metrics.jsonl")
    assert recs and all(f"valid/{d}/loss" in recs[-1] for d in ("web", "code", "books"))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 4, reason="TP=2/PP=2 needs 4 GPUs")
def test_example_tp2_pp2_launch(corpus, tmp_path):
    env = dict(os.environ, MIXTURE=str(corpus / "natural.json"), OUT=str(tmp_path), TRAIN_SAMPLES="64")
    proc = subprocess.run(["bash", str(REPO / "examples" / "megatron_tp2_pp2.sh")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "metrics.jsonl").is_file()


def test_metrics_hook_writes_megatron_evaluation_results(parse, corpus, tmp_path, monkeypatch):
    """The wrapper around megatron.training.training.evaluate logs the reduced valid/<domain>/loss values.

    Megatron's real evaluate needs CUDA, so a stand-in returns what it returns: (total_loss_dict, data, timelimit).
    """
    import megatron.training.training as mtraining

    from regmix_plugin.megatron.hooks import install_metrics_hook
    from regmix_plugin.metrics import read_metrics
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.proxy import distributed

    def fake_evaluate(*args, **kwargs):
        return {"lm loss": torch.tensor(3.0), "valid/web/loss": torch.tensor(2.5), "valid/code/loss": torch.tensor(3.5)}, None, False

    monkeypatch.setattr(mtraining, "evaluate", fake_evaluate)
    args = parse([*MODEL_FLAGS, "--train-iters", "10", "--data-mixture-from", str(corpus / "natural.json"),
                  "--save", str(tmp_path), "--save-interval", "5"])
    args.iteration, args.curr_iteration, args.consumed_train_samples = 0, 7, 28
    distributed.setup("cpu")
    try:
        install_metrics_hook()
        mtraining.evaluate("forward_step", None, None, None, None)
    finally:
        distributed.teardown()
    (rec,) = read_metrics(tmp_path / "metrics.jsonl")
    assert rec["step"] == 7 and rec["tokens"] == 28 * 32
    assert rec["valid/web/loss"] == 2.5 and rec["valid/code/loss"] == 3.5 and "lm loss" not in rec
    assert rec["mixture_hash"] == Mixture.load(corpus / "natural.json").content_hash()

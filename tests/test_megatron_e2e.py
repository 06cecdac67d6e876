"""Megatron-LM's own ``pretrain()`` end to end on CPU, launched as a GPU user launches it.

Every run is ``torchrun ... -m regmix_plugin.megatron.pretrain_gpt`` with real ``megatron.training`` on gloo;
the only difference from a GPU launch is ``tests/megatron_cpu`` (the CPU patches, test support only) on
PYTHONPATH. The runs, shared by the tests below:

* ``ref``: TP = PP = DP = 1, 4 iterations, evaluating at 2 and 4 (Megatron evaluates once more after training),
  checkpoints at 2 and 4; a direct forward pass computes each domain's loss beside every evaluation;
* ``dp2``: the same with two data-parallel ranks;
* ``tp2pp2``: TP = 2 x PP = 2 resuming from ``ref``'s checkpoint at iteration 2 (megatron-core's distributed
  checkpoint reshards it) and training on to 4;
* ``schedule``: a two-phase schedule, relaunched after Megatron exits at the transition, then once more.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from proxy_helpers import REPO, make_corpus, write_mixture

from regmix_plugin.metrics import read_metrics

sys.path.insert(0, str(REPO / "tests" / "megatron_cpu"))
from tiny_launch import EXACT, LAUNCH, SIZED  # noqa: E402

pytestmark = pytest.mark.megatron_e2e

CPU_SUPPORT = REPO / "tests" / "megatron_cpu"
WEIGHTS = {"web": 0.75, "code": 0.25, "books": 0.0}  # books: not trained on, still evaluated

# The CPU backend, plus what exact comparisons across layouts need (tiny_launch.EXACT).
CPU_ONLY = ["--distributed-backend", "gloo", *EXACT]


def launch(nproc: int, *flags: str, direct_eval: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, REGMIX_TEST_MEGATRON_CPU="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(p for p in (str(CPU_SUPPORT), os.environ.get("PYTHONPATH")) if p))
    env.pop("CUDA_DEVICE_MAX_CONNECTIONS", None)  # the plugin sets it for TP > 1; the TP run checks that it did
    if direct_eval is not None:
        env["REGMIX_TEST_DIRECT_EVAL"] = str(direct_eval)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "regmix_plugin.megatron.pretrain_gpt", *LAUNCH, *CPU_ONLY, *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("megatron_e2e")
    make_corpus(root / "corpus", ("web", "code", "books"), docs=24)
    mix = write_mixture(root / "corpus", "mix", WEIGHTS)
    out = {"root": root, "mix": mix}

    def run(name: str, nproc: int, *flags: str, **kw) -> Path:
        d = root / name
        out[name] = launch(nproc, "--data-mixture-from", str(mix), "--save", str(d),
                           "--tensorboard-dir", str(d / "megatron_tb"), *flags, **kw)
        return d

    run("ref", 1, direct_eval=root / "direct.jsonl")
    run("dp2", 2)
    run("tp2pp2", 4, "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
        "--load", str(root / "ref"), "--ckpt-step", "2")

    a = write_mixture(root / "corpus", "phase_a", {"web": 0.7, "code": 0.3})
    b = write_mixture(root / "corpus", "phase_b", {"code": 0.5, "books": 0.5})
    sched = root / "schedule.yaml"
    sched.write_text(f"phases:\n  - {{start: 0, mixture: {a}}}\n  - {{start: 2, mixture: {b}}}\n")
    flags = ["--data-schedule-from", str(sched), "--save", str(root / "schedule")]
    out["schedule_launches"] = [launch(1, *flags) for _ in range(3)]
    return out


def _by_step(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}


def _losses(rec: dict) -> dict[str, float]:
    return {d: rec[f"valid/{d}/loss"] for d in WEIGHTS}


def test_train_blend_follows_the_mixture(runs):
    final = _by_step(runs["root"] / "ref")[4]
    drawn = {d: final[f"train/{d}/samples"] for d in WEIGHTS}
    assert sum(drawn.values()) == 16  # 4 iterations x global batch 4, every sample reached the loss
    for d, w in WEIGHTS.items():
        assert abs(drawn[d] - 16 * w) <= 1, drawn
    assert drawn["books"] == 0 and final["valid/books/loss"] > 0  # weight 0: never trained on, still evaluated


def test_per_domain_losses_equal_a_direct_forward_pass(runs):
    direct = [json.loads(line) for line in (runs["root"] / "direct.jsonl").read_text().splitlines()]
    # Megatron evaluates at 2 and 4, and once more after training at 4.
    assert [r["iteration"] for r in direct] == [2, 4, 4]
    metrics = _by_step(runs["root"] / "ref")
    for r in direct:
        got = _losses(metrics[r["iteration"]])
        for d in WEIGHTS:
            assert got[d] == pytest.approx(r[d], rel=2e-4), (r["iteration"], d)
    # The two evaluations of the final weights printed the same per-domain losses to every digit.
    lines = [ln for ln in runs["ref"].stdout.splitlines() if "regmix per-domain validation loss at iteration 4" in ln]
    assert len(lines) == 2 and lines[0] == lines[1]
    # The summed loss is Megatron's own lm loss over the same tokens.
    lm = [float(x) for x in re.findall(r"validation loss at iteration 4 \| lm loss value: (\S+)", runs["ref"].stdout)]
    assert lm and metrics[4]["valid/loss"] == pytest.approx(lm[0], rel=1e-6)


def test_two_data_parallel_ranks_agree_with_one(runs):
    ref, dp2 = _by_step(runs["root"] / "ref"), _by_step(runs["root"] / "dp2")
    assert sorted(dp2) == sorted(ref) == [2, 4]
    for step in (2, 4):
        for d, v in _losses(ref[step]).items():
            assert dp2[step][f"valid/{d}/loss"] == pytest.approx(v, rel=1e-4)
            assert dp2[step][f"train/{d}/samples"] == ref[step][f"train/{d}/samples"]


def test_tensor_and_pipeline_parallel_agree_with_one_rank(runs):
    ref, tp = _by_step(runs["root"] / "ref"), _by_step(runs["root"] / "tp2pp2")
    assert sorted(tp) == [4]  # resumed at 2 from ref's checkpoint
    for d, v in _losses(ref[4]).items():
        assert tp[4][f"valid/{d}/loss"] == pytest.approx(v, rel=5e-4)
        # Samples drawn in this launch: iterations 3 and 4, the same samples ref drew there.
        assert tp[4][f"train/{d}/samples"] == ref[4][f"train/{d}/samples"] - ref[2][f"train/{d}/samples"]
    assert "set CUDA_DEVICE_MAX_CONNECTIONS=1" in runs["tp2pp2"].stdout


def test_schedule_reaches_phase_two_across_the_relaunch_and_stops(runs):
    first, second, third = runs["schedule_launches"]
    assert "exiting program at iteration 2" in first.stdout
    assert "resuming" not in first.stdout and "iteration        3/" in second.stdout
    assert "the schedule is complete" in third.stdout and "building datasets" not in third.stdout
    recs = _by_step(runs["root"] / "schedule")
    assert recs[2]["mixture_name"] == "phase_a" and recs[4]["mixture_name"] == "phase_b"
    assert {d: recs[4][f"train/{d}/samples"] for d in WEIGHTS} == {"web": 0, "code": 4, "books": 4}
    assert (runs["root"] / "schedule" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"


def test_metrics_and_tensorboard_carry_megatron_iterations(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ref = runs["root"] / "ref"
    metrics = _by_step(ref)
    megatron = EventAccumulator(str(ref / "megatron_tb"))
    megatron.Reload()
    assert [e.step for e in megatron.Scalars("lm loss validation")][:2] == [2, 4]
    assert [e.step for e in megatron.Scalars("lm loss")] == [1, 2, 3, 4]
    plugin = EventAccumulator(str(ref / "tb"))
    plugin.Reload()
    for d in WEIGHTS:
        named = megatron.Scalars(f"lm loss validation-{d}")
        assert [e.step for e in named] == [2, 4]
        assert [e.value for e in named] == pytest.approx([metrics[s][f"valid/{d}/loss"] for s in (2, 4)], rel=1e-6)
        assert [e.step for e in plugin.Scalars(f"valid/{d}/loss")] == [2, 4]


def test_docs_use_the_tested_flags():
    """README's launch line and the example script use exactly the test's flags, apart from values."""
    tested = {f for f in LAUNCH + CPU_ONLY if f.startswith("--")} - set(CPU_ONLY) | SIZED | {"--data-mixture-from"}
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(CUDA_DEVICE_MAX_CONNECTIONS=1 torchrun [^`]*?pretrain_gpt[^`]*?)```", readme)
    assert block, "README.md has no torchrun ... pretrain_gpt launch block"
    example = "\n".join(ln for ln in (REPO / "examples" / "megatron_tp2_pp2.sh").read_text().splitlines()
                        if not ln.lstrip().startswith("#"))
    for name, text in (("README.md", block.group(1)), ("examples/megatron_tp2_pp2.sh", example)):
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", text)) - {"--standalone", "--nproc-per-node"}
        assert flags == tested, f"{name}: extra {sorted(flags - tested)}, missing {sorted(tested - flags)}"


def test_gpu_check_rehearses_on_cpu(tmp_path):
    """scripts/gpu_check.py has no GPU here; its CPU rehearsal runs every check it would run on one GPU.

    The rehearsal's launches stand in for a GPU's (random draws on "cuda" from a generator of their own), and its
    CPU reference evaluates the checkpoint the "device" trained: one set of weights on one CPU, so the two
    evaluations agree to rounding (the check's own threshold, 1e-3, is for a real GPU against the CPU). This is
    issue 23's point 1: before the reference loaded the device's checkpoint, it drew its own weights from the CPU
    generator that the device's warm-up had left alone, and the difference was far above 1e-6."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--gpus", "1",
                           "--proxies", "2", "--budget", "1200", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, timeout=1500, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gpu-check: ")]
    assert proc.returncode == 0, "\n".join(lines) + proc.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert [r["check"] for r in results] == ["proxy trainer on cpu", "pretrain_gpt --data-mixture-from, TP=1",
                                             "per-domain losses vs the CPU reference", "2 proxies packed on one cpu"]
    assert all(r["ok"] for r in results) and sum(ln.count(" PASS ") for ln in lines) == 4
    assert results[2]["value"] < 1e-6, results[2]
    assert all(r["seconds"] <= r["limit_s"] for r in results)

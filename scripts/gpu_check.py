"""`make gpu-check`: the GPU paths in one command, one line per check, non-zero exit on any failure.

    .venv/bin/python scripts/gpu_check.py [--out gpu_check_out] [--budget 480]

On a machine with NVIDIA GPUs, within --budget seconds (default 8 minutes):

1. the proxy trainer on CUDA (``regmix train --set train.device=cuda``);
2. ``pretrain_gpt`` with ``--data-mixture-from`` at TP = 1 (README.md's flags, tiny sizes, bf16), and with
   2 GPUs DP = 2 and TP = 2, with 4 GPUs TP = 2 x PP = 2 (resumed from the TP = 1 checkpoint and compared);
3. per-domain losses against the CPU reference: the same initial weights (``--use-cpu-initialization``, fp32,
   ``--skip-train``) evaluated on the GPU and on the CPU (through tests/megatron_cpu);
4. several proxies packed on one GPU at once against the same proxies one at a time (throughput ratio).

``--device cpu`` rehearses the whole script on CPU (the Megatron launches through tests/megatron_cpu,
``--gpus N`` ranks standing in for GPUs); the test suite runs that rehearsal, so the script itself is tested
even where no GPU is. Writes gpu_check.json (every check, its numbers and its time) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # megatron-core's import-time notes about Transformer Engine and apex
REPO = Path(__file__).resolve().parents[1]
CPU_SUPPORT = REPO / "tests" / "megatron_cpu"
sys.path.insert(0, str(CPU_SUPPORT))
sys.path.insert(0, str(REPO / "tests"))
from tiny_launch import EXACT, LAUNCH  # noqa: E402

DOMAINS = ("web", "code", "books")


class Check:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.results: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn, *args) -> object:
        """Run one check; print one PASS/FAIL line; never raise."""
        t0 = time.monotonic()
        if self.left() < 10:
            ok, detail, value = False, "skipped: the time budget is spent", None
        else:
            try:
                ok, detail, value = fn(*args)
            except subprocess.TimeoutExpired:
                ok, detail, value = False, "timed out (budget)", None
            except Exception as e:  # a check that breaks is a failed check, reported in one line
                ok, detail, value = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", None
        seconds = time.monotonic() - t0
        print(f"gpu-check: {'PASS' if ok else 'FAIL'}  {name}: {detail} ({seconds:.0f} s)", flush=True)
        self.results.append({"check": name, "ok": ok, "detail": detail, "seconds": round(seconds, 1)})
        return value if ok else None


def _env(cpu: bool) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    if cpu:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CPU_SUPPORT), os.environ.get("PYTHONPATH")) if p)
        env["REGMIX_TEST_MEGATRON_CPU"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU patches stand in for a GPU that must not be seen
    return env


def megatron(check: Check, nproc: int, flags: list[str], *, cpu: bool, fp32: bool = False) -> subprocess.CompletedProcess:
    launch = [f for f in LAUNCH if not (fp32 and f == "--bf16")]
    backend = ["--distributed-backend", "gloo"] if cpu else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "regmix_plugin.megatron.pretrain_gpt", *launch, *EXACT, *backend, *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(cpu), cwd=REPO, timeout=max(check.left(), 1))
    if proc.returncode:
        tail = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)[-300:]}")
    return proc


def metrics(run_dir: Path) -> dict[int, dict]:
    from regmix_plugin.metrics import read_metrics

    merged: dict[int, dict] = {}
    for r in read_metrics(run_dir / "metrics.jsonl"):  # the proxy writes train and validation lines apart
        merged.setdefault(r["step"], {}).update(r)
    return merged


def losses(rec: dict) -> dict[str, float]:
    return {d: rec[f"valid/{d}/loss"] for d in DOMAINS}


def max_rel(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[d] - b[d]) / abs(b[d]) for d in DOMAINS)


def proxy_args(mixture: Path, run_dir: Path, device: str, steps: int) -> list[str]:
    sets = [f"train.device={device}", f"train.steps={steps}", f"eval.every={steps}", "train.progress=false",
            "checkpoint.every=0"]
    return ["train", "--mixture", str(mixture), "--config", str(REPO / "megatron_configs" / "proxy-tiny-cpu.yaml"),
            "--run-dir", str(run_dir), *[x for s in sets for x in ("--set", s)]]


def check_proxy(check: Check, mixture: Path, work: Path, device: str):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "regmix_plugin", *proxy_args(mixture, work / "proxy", device, 40)],
                          capture_output=True, text=True, env=_env(False), cwd=REPO, timeout=max(check.left(), 1))
    if proc.returncode:
        return False, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1][-200:] if proc.stderr.strip() else ''}", None
    final = losses(metrics(work / "proxy")[40])
    finite = all(math.isfinite(v) for v in final.values())
    shown = ", ".join(f"{d} {v:.4f}" for d, v in final.items())
    return finite, f"40 steps in {time.monotonic() - t0:.1f} s, per-domain validation losses {shown}", final


def check_tp1(check: Check, mixture: Path, work: Path, cpu: bool):
    megatron(check, 1, ["--data-mixture-from", str(mixture), "--save", str(work / "tp1")], cpu=cpu)
    recs = metrics(work / "tp1")
    ok = sorted(recs) == [2, 4] and all(math.isfinite(v) for r in recs.values() for v in losses(r).values())
    drawn = {d: recs[4][f"train/{d}/samples"] for d in DOMAINS}
    return ok, f"evaluations at {sorted(recs)}, valid/loss {recs[4]['valid/loss']:.4f}, samples drawn {drawn}", recs


def check_layout(check: Check, mixture: Path, work: Path, cpu: bool, name: str, nproc: int, layout: list[str],
                 tp1: dict, resume: bool):
    flags = ["--data-mixture-from", str(mixture), "--save", str(work / name), *layout]
    if resume:
        flags += ["--load", str(work / "tp1"), "--ckpt-step", "2"]
    megatron(check, nproc, flags, cpu=cpu)
    rel = max_rel(losses(metrics(work / name)[4]), losses(tp1[4]))
    return rel < 2e-2, f"per-domain losses at iteration 4 within {rel:.1e} of TP=1 (bf16)", rel


def check_reference(check: Check, mixture: Path, work: Path, cpu: bool):
    """The same initial weights on this device and on the CPU: fp32, initialised on the CPU, evaluated only."""
    flags = ["--data-mixture-from", str(mixture), "--skip-train", "--use-cpu-initialization"]
    megatron(check, 1, [*flags, "--save", str(work / "ref_device")], cpu=cpu, fp32=True)
    megatron(check, 1, [*flags, "--save", str(work / "ref_cpu")], cpu=True, fp32=True)
    here, there = losses(metrics(work / "ref_device")[0]), losses(metrics(work / "ref_cpu")[0])
    rel = max_rel(here, there)
    return rel < 1e-3, f"max relative difference {rel:.1e} over {len(DOMAINS)} domains (fp32)", rel


def check_packing(check: Check, mixture: Path, work: Path, device: str, n: int):
    def start(i: int, tag: str):
        return subprocess.Popen([sys.executable, "-m", "regmix_plugin", *proxy_args(mixture, work / f"{tag}{i}", device, 40)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(False), cwd=REPO)

    def wait(procs):
        for p in procs:
            _, err = p.communicate(timeout=max(check.left(), 1))
            if p.returncode:
                raise RuntimeError(f"a proxy failed: {err.strip().splitlines()[-1][-200:] if err.strip() else p.returncode}")

    t0 = time.monotonic()
    for i in range(n):
        wait([start(i, "alone")])
    alone = time.monotonic() - t0
    t0 = time.monotonic()
    wait([start(i, "packed") for i in range(n)])
    packed = time.monotonic() - t0
    ratio = alone / packed
    return True, f"{n} proxies one at a time {alone:.1f} s, packed {packed:.1f} s: {ratio:.2f}x throughput", ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all checks (default 8 minutes)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: rehearse the script without a GPU (Megatron through tests/megatron_cpu)")
    ap.add_argument("--gpus", type=int, default=None, help="with --device cpu: how many GPUs to stand in for")
    ap.add_argument("--proxies", type=int, default=4, help="proxies packed on one device")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    import torch

    gpus = (args.gpus or 1) if cpu else torch.cuda.device_count()
    check = Check(time.monotonic() + args.budget)
    if gpus < 1:
        print("gpu-check: FAIL  no CUDA GPU visible (torch.cuda.device_count() == 0)")
        return 1
    name = "cpu rehearsal" if cpu else torch.cuda.get_device_name(0)
    print(f"gpu-check: {gpus} x {name}, torch {torch.__version__}, budget {args.budget:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="regmix-gpu-check-"))
    try:
        from proxy_helpers import make_corpus, write_mixture

        make_corpus(work / "corpus", DOMAINS, docs=24)
        mixture = write_mixture(work / "corpus", "mix", {"web": 0.75, "code": 0.25})
        check.run(f"proxy trainer on {args.device}", check_proxy, check, mixture, work, args.device)
        tp1 = check.run("pretrain_gpt --data-mixture-from, TP=1", check_tp1, check, mixture, work, cpu)
        check.run("per-domain losses vs the CPU reference", check_reference, check, mixture, work, cpu)
        layouts = []
        if gpus >= 2:
            layouts += [("DP=2", 2, [], False), ("TP=2", 2, ["--tensor-model-parallel-size", "2"], True)]
        if gpus >= 4:
            layouts.append(("TP=2 x PP=2", 4, ["--tensor-model-parallel-size", "2",
                                               "--pipeline-model-parallel-size", "2"], True))
        for label, nproc, layout, resume in layouts:
            if tp1 is None:
                check.run(f"pretrain_gpt {label}", lambda: (False, "needs the TP=1 run", None))
                continue
            check.run(f"pretrain_gpt {label} vs TP=1", check_layout, check, mixture, work, cpu,
                      label.replace(" ", "").replace("=", ""), nproc, layout, tp1, resume)
        if gpus == 1:
            print("gpu-check: note  one GPU: DP, TP and PP need 2+ GPUs here (tests/test_megatron_e2e.py covers them "
                  "on CPU)", flush=True)
        check.run(f"{args.proxies} proxies packed on one {args.device}", check_packing, check, mixture, work,
                  args.device, args.proxies)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r["check"] for r in check.results if not r["ok"]]
    (out / "gpu_check.json").write_text(json.dumps({"device": name, "gpus": gpus, "checks": check.results}, indent=2))
    print(f"gpu-check: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'}; wrote {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make gpu-check`: the GPU paths in one command, one line per check, non-zero exit on any failure.

    python scripts/gpu_check.py [--out gpu_check_out] [--budget SECONDS] [--preflight-only]

Run it with the Python that has the GPU stack: `make gpu-check` (a fresh .venv from the package index) or
`make gpu-check PYTHON=python3` (the environment you already have, e.g. an NGC container: the plugin is
installed beside its torch, Transformer Engine, apex and megatron-core with --no-deps). docs/megatron.md says
what each check proves and how long it takes.

First a pre-flight, one line per requirement found missing: a CUDA build of torch that sees a GPU and a driver
recent enough for it (torch's own CUDA warnings are printed, not hidden), a C compiler and Python's headers
(Triton compiles with them for torch.compile, which Megatron's fused kernels use), a /dev/shm of at least
1 GiB, a usable or absent (not broken) Transformer Engine, megatron-core 0.19, the plugin's Python packages.
Then, each check with its own time limit (its share of --budget; default 8 minutes with one GPU, 12 with more),
its whole process tree stopped when it runs over (torchrun's workers included):

1. the proxy trainer on CUDA (``regmix train --set train.device=cuda``);
2. ``pretrain_gpt`` with ``--data-mixture-from`` at TP = 1 (README.md's flags, tiny sizes, bf16), and with
   2 GPUs DP = 2 and TP = 2, with 4 GPUs TP = 2 x PP = 2 (resumed from the TP = 1 checkpoint and compared);
3. per-domain losses against the CPU reference: one checkpoint (4 fp32 iterations trained on the GPU, TF32
   off) evaluated on the GPU and, loaded with ``--load --skip-train``, on the CPU (through tests/megatron_cpu,
   the local implementation): the same weights on both devices, whatever each drew for its JIT warm-up;
4. several proxies packed on one GPU at once against the same proxies one at a time (throughput ratio).

``--device cpu`` rehearses the whole script on CPU (the Megatron launches through tests/megatron_cpu,
``--gpus N`` ranks standing in for GPUs, random draws on "cuda" from a generator of their own as on a GPU);
the test suite runs that rehearsal, so the script itself is tested even where no GPU is. Writes
gpu_check.json (the pre-flight, every check, its limit, numbers and time) to --out.
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

# megatron-core's import-time notes about Transformer Engine and apex; torch's CUDA warnings stay visible.
warnings.filterwarnings("ignore", module=r"megatron\.")
REPO = Path(__file__).resolve().parents[1]
CPU_SUPPORT = REPO / "tests" / "megatron_cpu"
sys.path.insert(0, str(CPU_SUPPORT))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))  # the plugin from this checkout, installed or not
from tiny_launch import EXACT, LAUNCH  # noqa: E402

from regmix_plugin.errors import ConfigError  # noqa: E402
from regmix_plugin.megatron import environment  # noqa: E402
from regmix_plugin.processes import run_limited, start, stop_tree  # noqa: E402

DOMAINS = ("web", "code", "books")
# Each check's share of the budget: its limit is its share of the time left over the shares of the checks
# still to run, so a hang costs one check its own limit and the later checks still run.
SHARES = {"proxy": 1.0, "tp1": 2.0, "reference": 3.0, "DP=2": 1.5, "TP=2": 1.5, "TP=2 x PP=2": 2.0, "packing": 2.0}


class Check:
    def __init__(self, budget: float, plan: list[str]) -> None:
        self.deadline = time.monotonic() + budget
        self.pending = list(plan)
        self.results: list[dict] = []

    def limit(self, key: str) -> float:
        left = self.deadline - time.monotonic()
        return max(left * SHARES[key] / sum(SHARES[k] for k in self.pending), 1.0)

    def run(self, key: str, name: str, fn, *args) -> object:
        """Run one check within its own limit; print one PASS/FAIL line; never raise."""
        limit = self.limit(key)
        self.pending.remove(key)
        t0 = time.monotonic()
        try:
            ok, detail, value = fn(t0 + limit, *args)
        except subprocess.TimeoutExpired:
            ok, detail, value = False, f"timed out at its limit of {limit:.0f} s (its processes stopped)", None
        except Exception as e:  # a check that breaks is a failed check, reported in one line
            ok, detail, value = False, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", None
        seconds = time.monotonic() - t0
        print(f"gpu-check: {'PASS' if ok else 'FAIL'}  {name}: {detail} ({seconds:.0f} s)", flush=True)
        self.results.append({"check": name, "ok": ok, "detail": detail, "seconds": round(seconds, 1),
                             "limit_s": round(limit, 1), "value": value if isinstance(value, float) else None})
        return value if ok else None


def _env(cpu: bool, role: str = "device") -> dict:
    """The environment of a launch. ``role``: "device" (the check's own runs; with ``cpu``, the rehearsal's
    stand-in for a GPU) or "reference" (the CPU reference, always through tests/megatron_cpu)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")  # launched with cwd=REPO: -m finds the plugin
    if cpu or role == "reference":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CPU_SUPPORT), os.environ.get("PYTHONPATH")) if p)
        env["REGMIX_TEST_MEGATRON_CPU"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU patches stand in for a GPU that must not be seen
    if cpu and role == "device":
        env["REGMIX_TEST_CUDA_GENERATOR"] = "1"  # draws on "cuda" leave the CPU generator alone, as on a GPU
    return env


def megatron(deadline: float, nproc: int, flags: list[str], *, cpu: bool, fp32: bool = False,
             role: str = "device") -> subprocess.CompletedProcess:
    launch = [f for f in LAUNCH if not (fp32 and f == "--bf16")]
    on_cpu = cpu or role == "reference"
    backend = ["--distributed-backend", "gloo"] if on_cpu else []
    env = _env(cpu, role)
    if fp32 and not on_cpu:
        # NGC containers turn TF32 on for fp32 matmuls (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1); a reference
        # comparison wants fp32 arithmetic on both sides.
        env.update(NVIDIA_TF32_OVERRIDE="0", TORCH_ALLOW_TF32_CUBLAS_OVERRIDE="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "regmix_plugin.megatron.pretrain_gpt", *launch, *EXACT, *backend, *flags]
    proc = run_limited(cmd, deadline - time.monotonic(), env=env, cwd=REPO)
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


def check_proxy(deadline: float, mixture: Path, work: Path, device: str):
    t0 = time.monotonic()
    proc = run_limited([sys.executable, "-m", "regmix_plugin", *proxy_args(mixture, work / "proxy", device, 40)],
                       deadline - t0, env=_env(False), cwd=REPO)
    if proc.returncode:
        return False, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1][-200:] if proc.stderr.strip() else ''}", None
    final = losses(metrics(work / "proxy")[40])
    finite = all(math.isfinite(v) for v in final.values())
    shown = ", ".join(f"{d} {v:.4f}" for d, v in final.items())
    return finite, f"40 steps in {time.monotonic() - t0:.1f} s, per-domain validation losses {shown}", final


def check_tp1(deadline: float, mixture: Path, work: Path, cpu: bool):
    megatron(deadline, 1, ["--data-mixture-from", str(mixture), "--save", str(work / "tp1")], cpu=cpu)
    recs = metrics(work / "tp1")
    ok = sorted(recs) == [2, 4] and all(math.isfinite(v) for r in recs.values() for v in losses(r).values())
    drawn = {d: recs[4][f"train/{d}/samples"] for d in DOMAINS}
    return ok, f"evaluations at {sorted(recs)}, valid/loss {recs[4]['valid/loss']:.4f}, samples drawn {drawn}", recs


def check_layout(deadline: float, mixture: Path, work: Path, cpu: bool, name: str, nproc: int, layout: list[str],
                 tp1: dict, resume: bool):
    flags = ["--data-mixture-from", str(mixture), "--save", str(work / name), *layout]
    if resume:
        flags += ["--load", str(work / "tp1"), "--ckpt-step", "2"]
    megatron(deadline, nproc, flags, cpu=cpu)
    rel = max_rel(losses(metrics(work / name)[4]), losses(tp1[4]))
    return rel < 2e-2, f"per-domain losses at iteration 4 within {rel:.1e} of TP=1 (bf16)", rel


def check_reference(deadline: float, mixture: Path, work: Path, cpu: bool):
    """One checkpoint, evaluated on this device and on the CPU: the same weights on both sides by construction.

    (Initialising both from one seed does not give one set of weights: pretrain()'s JIT warm-up draws on "cuda"
    between seeding and building the model, which a GPU takes from its own generator and the CPU from the one
    --use-cpu-initialization then draws the weights from.)
    """
    flags = ["--data-mixture-from", str(mixture)]
    device, reference = work / "ref_device", work / "ref_cpu"
    megatron(deadline, 1, [*flags, "--save", str(device)], cpu=cpu, fp32=True)  # trains 4 iterations, saves 2, 4
    megatron(deadline, 1, [*flags, "--save", str(reference), "--load", str(device), "--skip-train", "--no-load-optim",
                           "--no-load-rng"], cpu=cpu, fp32=True, role="reference")
    here, there = losses(metrics(device)[4]), losses(metrics(reference)[4])
    rel = max_rel(here, there)
    return rel < 1e-3, (f"max relative difference {rel:.1e} over {len(DOMAINS)} domains, one checkpoint "
                        "(iteration 4, fp32) evaluated on both"), rel


def check_packing(deadline: float, mixture: Path, work: Path, device: str, n: int):
    def launch(i: int, tag: str):
        return start([sys.executable, "-m", "regmix_plugin", *proxy_args(mixture, work / f"{tag}{i}", device, 40)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(False), cwd=REPO)

    def wait(procs):
        try:
            for p in procs:
                _, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
                if p.returncode:
                    raise RuntimeError(f"a proxy failed: {err.strip().splitlines()[-1][-200:] if err.strip() else p.returncode}")
        except BaseException:
            for p in procs:
                stop_tree(p.pid)
            raise

    t0 = time.monotonic()
    for i in range(n):
        wait([launch(i, "alone")])
    alone = time.monotonic() - t0
    t0 = time.monotonic()
    wait([launch(i, "packed") for i in range(n)])
    packed = time.monotonic() - t0
    ratio = alone / packed
    return True, f"{n} proxies one at a time {alone:.1f} s, packed {packed:.1f} s: {ratio:.2f}x throughput", ratio


def preflight(cpu: bool) -> tuple[list[str], bool, dict]:
    """(one line per requirement missing, whether the checks cannot run, what was found)."""
    import torch

    lines, fatal = [], False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpus = torch.cuda.device_count() if not cpu else 0
    found = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpus": gpus}
    if not cpu:
        driver = environment.nvidia_driver_version()
        found["driver"] = driver
        problems = environment.cuda_problems(torch.__version__, torch.version.cuda, gpus, driver,
                                             [str(w.message) for w in caught])
        lines += problems
        fatal |= gpus == 0 or bool(problems)
    try:
        note = environment.check_megatron_core()
        if note:
            lines.append(note)
    except ConfigError as e:
        lines.append(str(e))
        fatal = True
    te = environment.transformer_engine()
    found["transformer_engine"] = f"{te.state} {te.detail}".strip()
    found["apex_modules"] = sorted(m for m in ("apex", environment.GRAD_ACCUM_KERNEL, *environment.SOFTMAX_KERNELS)
                                   if environment.importable(m))
    if te.state == environment.BROKEN:
        lines.append(str(environment.te_error(te)))
        fatal |= not cpu  # a rehearsal's launches hide TE (tests/megatron_cpu)
    missing = environment.missing_packages()
    lines += missing
    fatal |= bool(missing)
    lines += environment.compiler_problems()
    shm = environment.shm_problem()
    if shm:
        lines.append(shm)
    return lines, fatal, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all checks (default 480 with one GPU, 720 with more), shared among them")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: rehearse the script without a GPU (Megatron through tests/megatron_cpu)")
    ap.add_argument("--gpus", type=int, default=None, help="with --device cpu: how many GPUs to stand in for")
    ap.add_argument("--proxies", type=int, default=4, help="proxies packed on one device")
    ap.add_argument("--preflight-only", action="store_true", help="print the pre-flight lines and stop")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines, fatal, found = preflight(cpu)
    for line in lines:
        print(f"gpu-check: pre-flight: {line}", flush=True)
    report = {"preflight": lines, "found": found, "checks": []}
    if fatal or args.preflight_only:
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        if fatal:
            print("gpu-check: FAIL  pre-flight: fix the lines above first (docs/megatron.md, 'The GPU check')")
            return 1
        print("gpu-check: pre-flight passed" + (" (notes above)" if lines else ""))
        return 0

    import torch

    gpus = (args.gpus or 1) if cpu else found["gpus"]
    name = "cpu rehearsal" if cpu else torch.cuda.get_device_name(0)
    budget = args.budget if args.budget is not None else (480.0 if gpus < 2 else 720.0)
    layouts = []
    if gpus >= 2:
        layouts += [("DP=2", 2, [], False), ("TP=2", 2, ["--tensor-model-parallel-size", "2"], True)]
    if gpus >= 4:
        layouts.append(("TP=2 x PP=2", 4, ["--tensor-model-parallel-size", "2",
                                           "--pipeline-model-parallel-size", "2"], True))
    check = Check(budget, ["proxy", "tp1", "reference", *[label for label, *_ in layouts], "packing"])
    print(f"gpu-check: {gpus} x {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), driver "
          f"{found.get('driver')}, Transformer Engine {found['transformer_engine']}, apex {found['apex_modules'] or 'absent'}, "
          f"budget {budget:.0f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="regmix-gpu-check-"))
    try:
        from proxy_helpers import make_corpus, write_mixture

        make_corpus(work / "corpus", DOMAINS, docs=24)
        mixture = write_mixture(work / "corpus", "mix", {"web": 0.75, "code": 0.25})
        check.run("proxy", f"proxy trainer on {args.device}", check_proxy, mixture, work, args.device)
        tp1 = check.run("tp1", "pretrain_gpt --data-mixture-from, TP=1", check_tp1, mixture, work, cpu)
        check.run("reference", "per-domain losses vs the CPU reference", check_reference, mixture, work, cpu)
        for label, nproc, layout, resume in layouts:
            if tp1 is None:
                check.run(label, f"pretrain_gpt {label}", lambda deadline: (False, "needs the TP=1 run", None))
                continue
            check.run(label, f"pretrain_gpt {label} vs TP=1", check_layout, mixture, work, cpu,
                      label.replace(" ", "").replace("=", ""), nproc, layout, tp1, resume)
        if gpus == 1:
            print("gpu-check: note  one GPU: DP, TP and PP need 2+ GPUs here (tests/test_megatron_e2e.py covers them "
                  "on CPU)", flush=True)
        check.run("packing", f"{args.proxies} proxies packed on one {args.device}", check_packing, mixture, work,
                  args.device, args.proxies)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r["check"] for r in check.results if not r["ok"]]
    report.update(device=name, gpus=gpus, budget_s=budget, checks=check.results)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"gpu-check: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'}; wrote {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

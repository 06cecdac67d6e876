"""Fixtures for the sweep tests: a tiny base mixture and a small real training command.

The command is a real user program (it is not our code): it reads the run's ``mixture.json``, "trains" for a
few steps computing a deterministic loss from the weights, and writes ``metrics.jsonl`` and ``outcome.json``
as the run-directory contract says. Its behaviour per run comes from the ``TOY_BEHAVIOUR`` environment
variable, e.g. ``n0002=exit,n0003=nan,n0004=flaky`` (``flaky`` fails on the first attempt only,
``hang`` sleeps for two minutes), and it
sleeps ``TOY_SLEEP`` seconds per step so that tests can interrupt a sweep mid-way.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml

DOMAINS = {"web": 60_000, "code": 25_000, "books": 10_000, "math": 5_000}

TOY_TRAINER = textwrap.dedent(
    """
    import json, math, os, sys, time
    mixture, run_dir = sys.argv[1], sys.argv[2]
    mix = json.load(open(mixture))
    w = {d["name"]: d["weight"] for d in mix["domains"]}
    run = os.environ["REGMIX_RUN_ID"]
    attempt = int(os.environ.get("REGMIX_ATTEMPT", "1"))
    mode = dict(x.split("=") for x in os.environ.get("TOY_BEHAVIOUR", "").split(",") if x).get(run, "ok")
    sleep = float(os.environ.get("TOY_SLEEP", "0"))
    os.makedirs(run_dir, exist_ok=True)
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a")
    if mode == "hang":
        time.sleep(120)
    for step in (10, 20, 30):
        time.sleep(sleep)
        train = 2.0 + sum((i + 1) * (v - 0.25) ** 2 for i, v in enumerate(w.values())) + 1.0 / step
        if mode == "nan" and step == 20:
            train = float("nan")
        rec = {"step": step, "tokens": step * 1000, "train/loss": train}
        metrics.write(json.dumps(rec) + "\\n")
        ev = {"step": step, "tokens": step * 1000}
        ev.update({f"valid/{d}/loss": 3.0 - math.log1p(10 * v) + 1.0 / step for d, v in w.items()})
        metrics.write(json.dumps(ev) + "\\n")
        metrics.flush()
    if mode == "exit" or (mode == "flaky" and attempt == 1):
        print("toy trainer: simulated crash", file=sys.stderr)
        sys.exit(3)
    status = "failed" if mode == "nan" else "completed"
    reason = "nan loss at step 20" if mode == "nan" else None
    json.dump({"status": status, "reason": reason, "final_step": 30, "tokens": 30000},
              open(os.path.join(run_dir, "outcome.json"), "w"))
    sys.exit(1 if mode == "nan" else 0)
    """
)


def write_base(folder: Path) -> Path:
    """A base mixture over four domains with token counts (the prefixes need not exist for the toy command)."""
    total = sum(DOMAINS.values())
    doc = {"version": 1, "name": "natural", "domains": [
        {"name": n, "weight": t / total, "prefixes": [f"{n}/train"], "tokens": t} for n, t in DOMAINS.items()]}
    path = folder / "natural.json"
    path.write_text(json.dumps(doc))
    return path


def write_study(folder: Path, n: int = 6, heldout: int = 2, backend: str = "local", **extra) -> Path:
    """A study running the toy trainer over ``n + heldout`` synthesized mixtures; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_base(folder)
    (folder / "toy_trainer.py").write_text(TOY_TRAINER)
    study = {
        "name": "toy",
        "base_mixture": "natural.json",
        "synthesize": {"n": n, "heldout": heldout, "seed": 7, "minimum": 0.001},
        "out": "out",
        "command": "{python} toy_trainer.py {mixture} {run_dir}",
        "runs": {"retries": 1},
        "backend": backend,
        "local": {"max_concurrent": 2},
    }
    study.update(extra)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path

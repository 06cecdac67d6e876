"""`regmix --help` and every subcommand's flags, pinned: a refactor must not change the command line.

The snapshot lives in tests/cli_pinned.json. A deliberate CLI change regenerates it with
``python tests/test_cli_pinned.py`` and the diff shows in review.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_pinned.json")
REPO = str(Path(__file__).resolve().parents[1])


def _flags(parser: argparse.ArgumentParser, name: str, out: dict) -> None:
    subs = {}
    flags = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            subs.update(a.choices)
            continue
        flags.append(
            {
                "flags": list(a.option_strings) or [a.dest],
                "nargs": a.nargs,
                "choices": sorted(map(str, a.choices)) if a.choices else None,
                "required": a.required,
                # Defaults that are paths in the checkout are pinned relative to it: a clone lives anywhere.
                "default": repr(a.default).replace(REPO, "<repo>") if a.option_strings else None,
            }
        )
    out[name] = flags
    for sub_name, sub in subs.items():
        _flags(sub, f"{name} {sub_name}", out)


def snapshot() -> dict:
    from regmix_plugin.cli import build_parser

    flags: dict = {}
    _flags(build_parser(), "regmix", flags)
    # Through a subprocess with a fixed width: argparse wraps help to the terminal's columns.
    env = {**os.environ, "COLUMNS": "100"}
    top = subprocess.run(
        [sys.executable, "-m", "regmix_plugin", "--help"], capture_output=True, text=True, check=True, env=env
    ).stdout
    return {"help": top.replace("python -m regmix_plugin", "regmix"), "flags": flags}


def test_the_command_line_is_unchanged():
    pinned = json.loads(SNAPSHOT.read_text())
    now = snapshot()
    assert now["help"] == pinned["help"]
    assert sorted(now["flags"]) == sorted(pinned["flags"])  # same subcommands
    for cmd, flags in pinned["flags"].items():
        assert now["flags"][cmd] == flags, cmd


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1) + "\n")

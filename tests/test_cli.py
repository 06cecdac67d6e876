"""The `regmix` command itself: cheap to start, and its copies of library constants stay in step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_building_the_parser_imports_no_heavy_library():
    # Every `regmix train` in a sweep builds the whole parser; the fitter's and trainer's libraries must load
    # only when their command runs.
    code = (
        "import sys, json; import regmix_plugin.cli as c; c.build_parser(); "
        "print(json.dumps(sorted(m for m in ('torch', 'megatron', 'scipy', 'pandas', 'lightgbm', 'sklearn', "
        "'matplotlib') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_install_warns_in_one_line_when_the_disk_is_too_small(tmp_path):
    # CI once failed deep in pip with "[Errno 28] No space left on device"; the Makefile now says so first.
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_disk.sh"
    env = {**os.environ, "REGMIX_INSTALL_GB": "100000000"}  # 100 PB: more than any disk here
    r = subprocess.run(["bash", str(script), str(tmp_path / "new" / ".venv")], capture_output=True, text=True, env=env)
    assert r.returncode == 0  # a warning, not a refusal: the estimate is rough
    assert r.stderr.count("\n") == 1 and "takes about 100000000 GB" in r.stderr and "VENV=" in r.stderr
    (tmp_path / "old" / ".venv" / "lib" / "python3.12" / "site-packages" / "torch").mkdir(parents=True)
    r = subprocess.run(["bash", str(script), str(tmp_path / "old" / ".venv")], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == ""  # torch already there: an upgrade needs little room

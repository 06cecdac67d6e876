"""The `regmix` command itself: cheap to start, and its copies of library constants stay in step."""

from __future__ import annotations

import json
import subprocess
import sys


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


def test_optimize_modes_match_the_search_module():
    from regmix_plugin.optimize.commands import MODES as cli_modes
    from regmix_plugin.optimize.search import MODES

    assert sorted(cli_modes) == sorted(MODES)

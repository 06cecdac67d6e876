"""The ``regmix`` command: a thin layer over the library.

Each stage owns its subcommands in ``regmix_plugin/<stage>/commands.py``, which exposes
``register(subparsers)``; each registered parser sets ``func`` to a function taking the parsed args and
returning an exit code. User errors (:class:`RegmixError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from regmix_plugin import __version__
from regmix_plugin.errors import RegmixError, one_line

# Order here is the order in `regmix --help`, which follows the loop.
_COMMAND_MODULES = (
    "regmix_plugin.mixture_commands",
    "regmix_plugin.data.commands",
    "regmix_plugin.proxy.commands",
    "regmix_plugin.synthesize.commands",
    "regmix_plugin.sweep.commands",
    "regmix_plugin.collect.commands",
    "regmix_plugin.fit.commands",
    "regmix_plugin.optimize.commands",
    "regmix_plugin.reuse.commands",
    "regmix_plugin.scale.commands",
    "regmix_plugin.continual.commands",
    "regmix_plugin.demo.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regmix",
        description="Choose a pretraining data mixture by regression over small proxy runs (RegMix).",
    )
    parser.add_argument("--version", action="version", version=f"regmix_plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RegmixError as e:
        print(f"regmix: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regmix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

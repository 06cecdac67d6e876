"""CLI subcommands of this stage (registered by regmix_plugin.cli)."""

from __future__ import annotations


def register(sub) -> None:
    """Add this stage's subcommands to the `regmix` parser."""

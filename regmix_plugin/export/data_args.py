"""``--format data-args``: the file Megatron-LM's ``--data-args-path`` reads (the ``--data-path`` list)."""

from __future__ import annotations

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture, MixtureError


@register("data-args")
def data_args(mix: Mixture, base_dir: str | None = None) -> str:
    args = data_path_args(mix, "train", base_dir)
    spaced = next((p for p in args if any(c.isspace() for c in p)), None)
    if spaced is not None:
        raise MixtureError(
            f"--format data-args: prefix {spaced!r} contains whitespace, and Megatron splits that file on "
            "whitespace; move the data or use --format megatron-args / per-split-json"
        )
    return " ".join(args) + "\n"

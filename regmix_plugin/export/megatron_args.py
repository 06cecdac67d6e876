"""``--format megatron-args``: the ``--data-path`` flag of a stock Megatron-LM launch, shell-quoted."""

from __future__ import annotations

import shlex

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture


@register("megatron-args")
def megatron_args(mix: Mixture, base_dir: str | None = None) -> str:
    parts = ["--data-path", *data_path_args(mix, "train", base_dir)]
    return " ".join(shlex.quote(p) for p in parts)

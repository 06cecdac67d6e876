"""``--format bridge``: what a Megatron-Bridge (NeMo) recipe needs, the ``dataset.data_path=`` override and
Python lines for its ``ConfigContainer``."""

from __future__ import annotations

import json
import shlex

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture, MixtureError


@register("bridge")
def bridge(mix: Mixture, base_dir: str | None = None) -> str:
    """Bridge's ``GPTDatasetConfig`` is megatron-core's: ``data_path`` is split on whitespace and read by
    megatron-core's ``get_blend_from_list`` into ``blend``; ``blend_per_split`` is ``[train, valid, test]``,
    each ``(prefixes, weights or None)``.
    """
    train = data_path_args(mix, "train", base_dir)
    spaced = next((p for p in train[1::2] if any(c.isspace() for c in p)), None)
    if spaced is not None:
        raise MixtureError(f"--format bridge: prefix {spaced!r} contains whitespace, and Bridge splits "
                           "dataset.data_path on whitespace; move the data")

    def blend(split: str) -> str:
        args = data_path_args(mix, split, base_dir)
        if not args:
            return "None"
        weights = "None" if split != "train" else "[" + ", ".join(args[0::2]) + "]"
        return "([" + ", ".join(json.dumps(p) for p in args[1::2]) + f"], {weights})"

    valid = blend("valid")
    lines = [
        f"# Megatron-Bridge: mixture {mix.name!r} ({len(mix.domains)} domains; weight-0 domains are not trained on)",
        "# 1. Override of a recipe run: the train blend (the recipe's split then carves validation from it).",
        "dataset.data_path=" + shlex.quote(" ".join(train)),
        "# 2. Python, on the recipe's ConfigContainer `cfg`: the train blend, and every domain's held-out",
        "#    validation set (weights None: each read in full).",
        "cfg.dataset.data_path = None",
        "cfg.dataset.blend = None",
        f"cfg.dataset.blend_per_split = [{blend('train')}, {valid}, {blend('test') if data_path_args(mix, 'test', base_dir) else valid}]",
        "cfg.dataset.split = None",
    ]
    return "\n".join(lines) + "\n"

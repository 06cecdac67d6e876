"""``--format per-split-json``: the JSON Megatron-LM's ``--per-split-data-args-path`` reads (train, valid, test)."""

from __future__ import annotations

import json

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture


@register("per-split-json")
def per_split_json(mix: Mixture, base_dir: str | None = None) -> str:
    train = data_path_args(mix, "train", base_dir)
    valid = data_path_args(mix, "valid", base_dir)
    test = data_path_args(mix, "test", base_dir)
    # Megatron's per-split file takes, for each split, the same list --data-path takes.
    doc = {"train": train, "valid": valid or train, "test": test or valid or train}
    return json.dumps(doc, indent=2) + "\n"

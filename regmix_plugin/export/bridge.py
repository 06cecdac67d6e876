"""``--format bridge``: what a Megatron-Bridge (NeMo) recipe needs, the ``dataset.data_path=`` override and
Python lines for its ``ConfigContainer``.

Supported: Megatron-Bridge 0.4 and later for the override (``GPTDatasetConfig.data_path`` first appears in
0.4.0; earlier releases reject the key), 0.2 and later for the Python lines. Both were read against
Bridge's own code (``training/config.py``, ``training/utils/omegaconf_utils.py``) at 0.2.0-0.6.0.

The override is Hydra syntax, parsed by Bridge with Hydra's ``OverridesParser``: an unquoted comma would make
it a sweep, and ``${...}`` an OmegaConf interpolation. So the value is a double-quoted Hydra string with its
quotes and interpolations escaped, and the whole override is quoted once more for the shell.
"""

from __future__ import annotations

import json
import shlex

from regmix_plugin.export.data_path import data_path_args
from regmix_plugin.export.registry import register
from regmix_plugin.mixture import Mixture, MixtureError


def hydra_quoted(value: str) -> str:
    """``value`` as a double-quoted Hydra override value that Hydra and OmegaConf read back as ``value``.

    Inside a quoted Hydra string a comma, bracket, colon or equals sign is literal; the quote is escaped as
    ``\\"`` and an interpolation as ``\\${``. A backslash is refused by the caller: Hydra treats backslashes
    before a quote (or the string's end) as escapes, and a Linux data path has no need of one. Double quotes,
    so that the shell's single quotes around the whole override stay readable.
    """
    return '"' + value.replace('"', '\\"').replace("${", "\\${") + '"'


def _refuse_unquotable(prefixes: list[str]) -> None:
    for p in prefixes:
        if any(c.isspace() for c in p):
            raise MixtureError(f"--format bridge: prefix {p!r} contains whitespace, and Bridge splits "
                               "dataset.data_path on whitespace; move the data to a path without spaces")
        if "\\" in p:
            raise MixtureError(f"--format bridge: prefix {p!r} contains a backslash, which Hydra reads as an "
                               "escape in an override; move the data to a path without backslashes")


@register("bridge")
def bridge(mix: Mixture, base_dir: str | None = None) -> str:
    """Bridge's ``GPTDatasetConfig`` is megatron-core's: ``data_path`` is split on whitespace and read by
    megatron-core's ``get_blend_from_list`` into ``blend``; ``blend_per_split`` is ``[train, valid, test]``,
    each ``(prefixes, weights or None)``.
    """
    train = data_path_args(mix, "train", base_dir)
    _refuse_unquotable(train[1::2])

    def blend(split: str) -> str:
        args = data_path_args(mix, split, base_dir)
        if not args:
            return "None"
        weights = "None" if split != "train" else "[" + ", ".join(args[0::2]) + "]"
        return "([" + ", ".join(json.dumps(p) for p in args[1::2]) + f"], {weights})"

    valid = blend("valid")
    lines = [
        f"# Megatron-Bridge: mixture {mix.name!r} ({len(mix.domains)} domains; weight-0 domains are not trained on)",
        "# 1. Override of a recipe run (Bridge >= 0.4): the train blend (the recipe's split then carves validation",
        "#    from it). Quoted for Hydra (a comma would start a sweep) and for the shell.",
        shlex.quote("dataset.data_path=" + hydra_quoted(" ".join(train))),
        "# 2. Python, on the recipe's ConfigContainer `cfg` (Bridge >= 0.2): the train blend, and every domain's",
        "#    held-out validation set (weights None: each read in full). A mock-data recipe's",
        "#    MockGPTDatasetConfig refuses blends; it has no fields of its own, so it becomes the",
        "#    GPTDatasetConfig it derives from, every setting kept.",
        "from megatron.bridge.training.config import GPTDatasetConfig, MockGPTDatasetConfig",
        "if isinstance(cfg.dataset, MockGPTDatasetConfig):",
        "    cfg.dataset.__class__ = GPTDatasetConfig",
        "cfg.dataset.data_path = None",
        "cfg.dataset.blend = None",
        f"cfg.dataset.blend_per_split = [{blend('train')}, {valid}, {blend('test') if data_path_args(mix, 'test', base_dir) else valid}]",
        "cfg.dataset.split = None",
    ]
    return "\n".join(lines) + "\n"

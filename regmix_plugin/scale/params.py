"""Non-embedding parameter counts for the size law: an explicit number, or a known model by name.

A model's label is not its size: "Pythia-70M" has 70.4M parameters in all but 18.9M outside the embeddings,
and the size law is fitted in non-embedding parameters (Kaplan et al.; Data Mixing Laws). Reading "70M" as
7e7 shifted predictions by several tenths of a percent without a word, so a count is either a number
(``18915328``, ``1.89e7``) or the name of a model below, and the command prints which count it used.
"""

from __future__ import annotations

import re

from regmix_plugin.errors import ConfigError


def _gpt_neox_non_embedding(layers: int, width: int) -> int:
    """Per layer: attention (4 d^2 + 4 d) + MLP with 4x width (8 d^2 + 5 d) + two LayerNorms (4 d); then a
    final LayerNorm (2 d). Gives the Pythia paper's table (70M: 18,915,328; 1B: 805,736,448)."""
    return layers * (12 * width * width + 13 * width) + 2 * width


# The Pythia suite (Biderman et al. 2023, table 1): name -> (layers, model width).
_PYTHIA = {"70m": (6, 512), "160m": (12, 768), "410m": (24, 1024), "1b": (16, 2048), "1.4b": (24, 2048),
           "2.8b": (32, 2560), "6.9b": (32, 4096), "12b": (36, 5120)}
KNOWN_MODELS: dict[str, int] = {}
for _size, (_layers, _width) in _PYTHIA.items():
    _n = _gpt_neox_non_embedding(_layers, _width)
    KNOWN_MODELS[f"pythia-{_size}"] = _n
    KNOWN_MODELS[f"pythia-{_size}-deduped"] = _n

_NUMBER = re.compile(r"\s*[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?\s*")


def parse_params(text: str, where: str) -> tuple[float, str]:
    """``(count, how it was read)`` for a parameter count or a known model name; a one-line error otherwise."""
    t = text.strip()
    if _NUMBER.fullmatch(t):
        value = float(t)
        if not value > 0:
            raise ConfigError(f"{where}: {text!r} must be > 0")
        return value, "as given"
    key = t.lower()
    if key in KNOWN_MODELS:
        return float(KNOWN_MODELS[key]), f"non-embedding parameters of {key}"
    hint = ""
    if re.fullmatch(r"[0-9]*\.?[0-9]+\s*[kKmMbBgGtT]", t):
        hint = (f" (a label like {t!r} is not a non-embedding count: a '70M' model has ~19M outside its "
                "embeddings)")
    raise ConfigError(f"{where}: {text!r} is not a parameter count{hint}; write the non-embedding parameter count "
                      f"as a number (e.g. 1.89e7) or a known model name ({', '.join(k for k in KNOWN_MODELS if 'deduped' not in k)})")


def params_of_runs(run_dirs, given: str | None) -> tuple[float | None, str]:
    """The runs' non-embedding parameter count and where it came from: ``given`` (``--params``) when set, else
    the ``run.non_embedding_parameters`` their config.yaml files agree on, else None with the reason."""
    if given:
        return parse_params(given, "--params")
    import yaml

    counts = set()
    for d in run_dirs:
        try:
            cfg = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
            counts.add(float(cfg["run"]["non_embedding_parameters"]))
        except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
            return None, "unknown (give --params to record it)"
    if len(counts) == 1:
        return counts.pop(), "from the runs' config.yaml"
    return None, "unknown: the runs' config.yaml files disagree"

"""A mixture as the list Megatron-LM's ``--data-path`` takes (``w1 p1 w2 p2 ...``): what every Megatron format
is made of."""

from __future__ import annotations

from regmix_plugin.mixture import Mixture


def data_path_args(mix: Mixture, split: str = "train", base_dir: str | None = None) -> list[str]:
    """``[w1, p1, w2, p2, ...]`` as Megatron's ``--data-path`` takes it; zero weights are left out.

    A domain with several prefixes shares its weight among them in proportion to nothing we know, so
    we split it evenly; give token counts per prefix by listing one prefix per domain if that matters.
    """
    out: list[str] = []
    for d in mix.domains:
        if split == "train":
            if d.weight <= 0:
                continue
            prefixes, w = d.prefixes, d.weight
        else:
            prefixes = d.valid_prefixes if split == "valid" else d.test_prefixes
            if not prefixes:
                continue
            w = 1.0  # evaluation sets are weighted equally per domain
        for p in prefixes:
            out += [_fmt_weight(w / len(prefixes)), mix.resolve(p, base_dir)]
    return out


def _fmt_weight(w: float) -> str:
    return f"{w:.10g}"

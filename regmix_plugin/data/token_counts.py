"""Token counts per domain of a mixture (its `tokens` fields or its `.idx` files), and the token cap they set:
for synthesis and the optimiser's constraints."""

from __future__ import annotations

from regmix_plugin.data.indexed import idx_token_count
from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Domain, Mixture


def token_cap(available, max_epochs, target_tokens):
    """The largest weight a domain may get so that a run of ``target_tokens`` repeats its ``available`` tokens
    at most ``max_epochs`` times (numbers or numpy arrays): synthesis and the optimiser's constraints."""
    return available * max_epochs / target_tokens


def domain_token_counts(mix: Mixture, source: str) -> dict[str, int]:
    """Training-token counts per domain: from the mixture's ``tokens`` fields or from the ``.idx`` files.

    ``source`` is ``tokens`` (the mixture file must carry them), ``idx`` (read every prefix's index) or
    ``auto`` (``tokens`` where present for every domain, else ``idx``).
    """
    if source == "auto":
        source = "tokens" if all(d.tokens is not None for d in mix.domains) else "idx"
    if source == "tokens":
        missing = [d.name for d in mix.domains if d.tokens is None]
        if missing:
            raise RegmixError(
                f"domains.{missing[0]}.tokens: missing in the base mixture; set prior: idx to read the .idx files"
            )
        return {d.name: int(d.tokens) for d in mix.domains}
    return {d.name: _idx_tokens(mix, d) for d in mix.domains}


def _idx_tokens(mix: Mixture, d: Domain) -> int:
    return sum(idx_token_count(mix.resolve(p)) for p in d.prefixes)


def domain_tokens_or_none(mix: Mixture, d: Domain) -> float | int | None:
    """A domain's ``tokens``, else the sum over its ``.idx`` files; None when those cannot be read (callers that
    need the count say which domain lacks it)."""
    if d.tokens is not None:
        return d.tokens
    try:
        return _idx_tokens(mix, d)
    except RegmixError:
        return None


"""Token counts per domain of a base mixture, for synthesis and the optimiser's token caps."""

from __future__ import annotations

from regmix_plugin.data.indexed import idx_token_count
from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Mixture


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
    return {d.name: sum(idx_token_count(mix.resolve(p)) for p in d.prefixes) for d in mix.domains}


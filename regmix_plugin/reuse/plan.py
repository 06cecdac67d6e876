"""Mixture reuse (Olmix, arXiv 2602.12237): re-search only what a data change touched. This module builds a
plan; its file and the two maps it defines are `regmix_plugin.reuse_plan`.

When domains are added, re-filtered or removed after a mixture was chosen, the domains the change does
not touch keep the ratios among them that the old mixture gave them. They become one *frozen* virtual
domain, and a smaller swarm searches the reduced simplex ``{frozen, updated..., added...}``. A reduced
mixture expands back to every real domain: an untouched domain ``d`` gets ``r_frozen * ratio_d``.

A plan folder (written by ``regmix reuse plan``) holds:

    plan.json        this plan: the frozen ratios, what changed, the old mixture and old runs it came from
    full_base.json   the new domain set (every real domain, absolute prefixes, token counts)
    base.json        the reduced base: the frozen group as one domain, then the free domains
    study.yaml       (with --study) the reduced study: base.json, ``reuse: plan.json``, the template's runs

The reduced base is a valid regmix.json, so synthesis, fit and optimize need nothing new. Its frozen
domain lists every untouched prefix, but trains nothing by itself: a sweep with ``reuse:`` expands each
mixture to the real domains before a run sees it (so every run still reports every real domain's
validation loss), and ``regmix reuse expand`` does the same for the optimized mixture.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from regmix_plugin.data.indexed import idx_token_count
from regmix_plugin.errors import RegmixError
from regmix_plugin.mixture import Domain, Mixture, MixtureError
from regmix_plugin.reuse_plan import FULL_BASE_FILE, PLAN_FILE, REDUCED_BASE_FILE, ReuseError, ReusePlan

DEFAULT_FROZEN_NAME = "frozen"
_KEPT_PROVENANCE = ("tool", "version", "time", "predictor", "target", "predicted_target", "n_runs")


# ---- building a plan ---------------------------------------------------------------------------
def _abs_domain(mix: Mixture, d: Domain) -> Domain:
    return Domain(name=d.name, weight=d.weight, prefixes=[os.path.abspath(mix.resolve(p)) for p in d.prefixes],
                  tokens=d.tokens, valid_prefixes=[os.path.abspath(mix.resolve(p)) for p in d.valid_prefixes],
                  test_prefixes=[os.path.abspath(mix.resolve(p)) for p in d.test_prefixes])


def _count(d: Domain, flag: str) -> int:
    try:
        return sum(idx_token_count(p) for p in d.prefixes)
    except RegmixError as e:
        raise ReuseError(f"{flag}: cannot count the tokens of {d.name} ({e})") from None


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_plan(
    old: Mixture,
    old_path: str | os.PathLike,
    base: Mixture | None = None,
    add: dict[str, list[str]] | None = None,
    valid: dict[str, list[str]] | None = None,
    update: dict[str, list[str] | None] | None = None,
    remove: list[str] | None = None,
    frozen_name: str = DEFAULT_FROZEN_NAME,
    old_runs: str | os.PathLike | None = None,
) -> tuple[ReusePlan, Mixture, Mixture]:
    """The plan, the full new base and the reduced base, for a change to ``old``'s domains.

    ``base`` (optional) lists the new domain set, e.g. the rebuilt corpus's natural.json: its domains that
    ``old`` lacks are added, ``old``'s domains it lacks are removed. ``add`` adds domains by prefix (their
    held-out sets from ``valid``); ``update`` marks domains whose data changed (with new prefixes, or None
    to keep the prefixes, e.g. data re-filtered in place); ``remove`` drops domains. A domain whose token
    count differs between ``old`` and ``base`` counts as updated (its data changed), with a note.
    """
    add, valid, update, remove = dict(add or {}), dict(valid or {}), dict(update or {}), list(remove or [])
    notes: list[str] = []
    old_names = old.names
    for n in remove:
        if n not in old_names:
            raise ReuseError(f"--remove {n}: not a domain of the old mixture ({', '.join(old_names)})")
    for n in update:
        if n not in old_names:
            raise ReuseError(f"--update {n}: not a domain of the old mixture ({', '.join(old_names)}); "
                             "use --add for a new domain")
        if n in remove:
            raise ReuseError(f"--update {n}: also given to --remove; give one of them")
    for n in add:
        if n in old_names:
            raise ReuseError(f"--add {n}: the old mixture already has it; use --update {n}=PREFIX for new data")
    for n in valid:
        if n not in add:
            raise ReuseError(f"--valid {n}: give it with --add {n}=PREFIX (held-out sets of other domains come "
                             "from the old mixture or --base)")

    if base is not None:
        domains = [_abs_domain(base, d) for d in base.domains]
        for n in remove:
            if n in base.names:
                raise ReuseError(f"--remove {n}: --base still lists it; drop it from --base or from --remove")
        for n in old_names:
            if n not in base.names and n not in remove:
                remove.append(n)
                notes.append(f"{n}: not in --base, so removed")
        for d in domains:
            if d.name in add:
                raise ReuseError(f"--add {d.name}: --base already lists it; drop one of them")
            if d.name not in old_names:
                add.setdefault(d.name, None)  # type: ignore[arg-type]
                notes.append(f"{d.name}: in --base but not in the old mixture, so added")
    else:
        domains = [_abs_domain(old, d) for d in old.domains if d.name not in remove]
    by_name = {d.name: d for d in domains}
    for n, prefixes in add.items():
        if prefixes is None:
            continue  # came with --base
        try:  # a Domain checks its fields when built
            d = Domain(name=n, weight=1.0, prefixes=[os.path.abspath(p) for p in prefixes],
                       valid_prefixes=[os.path.abspath(p) for p in valid.get(n, [])])
        except MixtureError as e:
            raise MixtureError(f"--add {n}: {e}") from None
        d.tokens = _count(d, f"--add {n}")
        domains.append(d)
        by_name[n] = d
    for n, prefixes in update.items():
        if prefixes:
            by_name[n].prefixes = [os.path.abspath(p) for p in prefixes]
    old_by_name = {d.name: d for d in old.domains}
    for d in domains:
        # Counted afresh from the .idx files (the tokens fields may predate the change); a domain whose files
        # are not here keeps the count its mixture file gives.
        try:
            d.tokens = _count(d, f"domain {d.name}")
        except ReuseError:
            if d.tokens is None or d.name in add or update.get(d.name):
                raise
        before = old_by_name.get(d.name)
        if (before is not None and d.name not in update and before.tokens is not None
                and before.tokens != d.tokens):
            update[d.name] = None
            notes.append(f"{d.name}: {before.tokens:,} tokens in the old mixture, {d.tokens:,} now, so updated")

    added = [d.name for d in domains if d.name in add]
    updated = [d.name for d in domains if d.name in update]
    untouched = [d.name for d in domains if d.name not in add and d.name not in update]
    if not added and not updated:
        raise ReuseError("--add/--update: nothing to re-search; with only removals the old mixture renormalised "
                         "over the remaining domains is the reused mixture")
    if frozen_name in by_name:
        raise ReuseError(f"--frozen-name {frozen_name}: a domain is already called that; pick another name")
    group = sum(old.weight_of(n) for n in untouched)
    if not untouched or group <= 0:
        raise ReuseError("--update/--remove: the old mixture gives the untouched domains no weight, so there is "
                         "nothing to freeze; run a full study instead")
    frozen = {n: old.weight_of(n) / group for n in untouched}

    total = sum(d.tokens for d in domains)
    for d in domains:
        d.weight = d.tokens / total if total > 0 else 1.0 / len(domains)
    full = Mixture(domains=domains, name="full-base")
    full = full.with_provenance(tool="regmix reuse plan", note="the new domain set with token-proportional weights")

    # The frozen group repeats as soon as its first member does: give it the tokens at which that happens,
    # so synthesis caps and repetition matching treat it like a domain of that size.
    group_tokens = min(by_name[n].tokens / r for n, r in frozen.items() if r > 0)
    frozen_domain = Domain(
        name=frozen_name, weight=1.0, tokens=int(group_tokens),
        prefixes=[p for n in untouched for p in by_name[n].prefixes],
        valid_prefixes=[p for n in untouched for p in by_name[n].valid_prefixes],
    )
    free = [d for d in domains if d.name not in frozen]
    reduced_domains = [frozen_domain] + [Domain(name=d.name, weight=1.0, prefixes=list(d.prefixes), tokens=d.tokens,
                                                valid_prefixes=list(d.valid_prefixes),
                                                test_prefixes=list(d.test_prefixes)) for d in free]
    rtotal = sum(d.tokens for d in reduced_domains)
    for d in reduced_domains:
        d.weight = d.tokens / rtotal if rtotal > 0 else 1.0 / len(reduced_domains)
    reduced = Mixture(domains=reduced_domains, name="reduced-base")
    reduced = reduced.with_provenance(
        tool="regmix reuse plan",
        note=f"{frozen_name} is the untouched domains in the old mixture's ratios; a sweep with "
             "`reuse:` and `regmix reuse expand` map its mixtures back to the real domains")

    prov = {k: old.provenance[k] for k in _KEPT_PROVENANCE if k in old.provenance}
    old_info = {"path": str(Path(old_path).resolve()), "name": old.name, "hash": old.content_hash(),
                "weights": dict(zip(old.names, old.weights)), "provenance": prov}
    runs_info = None
    if old_runs is not None:
        p = Path(old_runs)
        if not p.is_file():
            raise ReuseError(f"--old-runs {p}: runs table not found; give the old study's `regmix collect` output")
        from regmix_plugin.table import read_runs

        runs_info = {"path": str(p.resolve()), "sha256": file_digest(p), "rows": int(len(read_runs(p)))}
    plan = ReusePlan(frozen_name=frozen_name, frozen=frozen, free=[d.name for d in free], added=added,
                     updated=updated, removed=list(remove), old_mixture=old_info, old_runs=runs_info, notes=notes)
    return plan, full, reduced


_SAME_PLAN = ("frozen_name", "frozen", "free", "added", "updated", "removed")


def write_plan(plan: ReusePlan, full: Mixture, reduced: Mixture, folder: str | os.PathLike,
               force: bool = False) -> Path:
    """Write the plan folder. A folder that holds a different plan is refused without ``force``: its reduced
    sweep's runs were trained in that plan's ratios."""
    folder = Path(folder)
    if (folder / PLAN_FILE).is_file() and not force:
        try:
            before = ReusePlan.load(folder)
        except ReuseError:
            before = None
        same = before is not None and all(getattr(before, k) == getattr(plan, k) for k in _SAME_PLAN) and \
            before.old_mixture.get("hash") == plan.old_mixture.get("hash")
        if not same:
            raise ReuseError(f"--out {folder}: already holds a different reuse plan; pick a new folder or pass "
                             "--force to replace it")
    full.save(folder / FULL_BASE_FILE)
    reduced.save(folder / REDUCED_BASE_FILE)
    return plan.save(folder)

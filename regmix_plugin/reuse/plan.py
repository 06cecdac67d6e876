"""Mixture reuse (Olmix, arXiv 2602.12237): re-search only what a data change touched.

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
import math
import os
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from regmix_plugin import __version__
from regmix_plugin.config_schema import Number, Text, config, validate
from regmix_plugin.data.indexed import idx_token_count
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json, read_json_file
from regmix_plugin.mixture import Domain, Mixture, MixtureError

PLAN_FILE = "plan.json"
FULL_BASE_FILE = "full_base.json"
REDUCED_BASE_FILE = "base.json"
DEFAULT_FROZEN_NAME = "frozen"
# How far (in weight) an old run's untouched domains may sit from the frozen ratios and still count as a
# point of the reduced simplex: twice the rounding quantum of synthesized mixtures (2e-4) and then some.
DEFAULT_TOLERANCE = 1e-3
_KEPT_PROVENANCE = ("tool", "version", "time", "predictor", "target", "predicted_target", "n_runs")


class ReuseError(RegmixError):
    pass


_FILE_HEADER = ("version", "tool", "regmix_version")  # written by to_dict, checked by load before the fields


@config(error=ReuseError)
class ReusePlan:
    frozen_name: Text
    frozen: dict[str, Number(ge=0, le=1)]  # untouched domain -> its share of the frozen group (sums to 1)
    free: list[Text]  # the reduced domains besides the frozen group, in full-base order
    added: list[Text]
    updated: list[Text]
    removed: list[Text]
    old_mixture: dict[str, Any]  # path, name, hash, weights, provenance (the fields that say where it came from)
    old_runs: dict[str, Any] | None = None  # path, sha256, rows
    notes: list[Text] = field(default_factory=list)
    full_base_file: Text = FULL_BASE_FILE
    reduced_base_file: Text = REDUCED_BASE_FILE
    folder: Path | None = field(default=None, repr=False, compare=False, init=False)  # where plan.json lies

    # ---- views ---------------------------------------------------------------------------------
    @property
    def reduced_names(self) -> list[str]:
        return [self.frozen_name, *self.free]

    def full_base(self) -> Mixture:
        return Mixture.load(self._path(self.full_base_file))

    def reduced_base(self) -> Mixture:
        return Mixture.load(self._path(self.reduced_base_file))

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise ReuseError("reuse plan: not saved yet, so its base files have no folder")
        return self.folder / name

    def summary(self) -> dict[str, Any]:
        """What a reused regmix.json records about where it came from."""
        return {"plan": str(self._path(PLAN_FILE)), "frozen_name": self.frozen_name, "frozen": dict(self.frozen),
                "free": list(self.free), "added": list(self.added), "updated": list(self.updated),
                "removed": list(self.removed), "old_mixture": dict(self.old_mixture), "old_runs": self.old_runs,
                "notes": list(self.notes)}

    # ---- the two maps --------------------------------------------------------------------------
    def expand(self, reduced: Mixture, name: str | None = None) -> Mixture:
        """The full mixture of a reduced one: untouched domains share the frozen weight in the old ratios."""
        if sorted(reduced.names) != sorted(self.reduced_names):
            raise ReuseError(f"{reduced.name}: domains {', '.join(reduced.names)} are not the plan's reduced "
                             f"domains {', '.join(self.reduced_names)}; give a mixture over the plan's base.json")
        full = self.full_base()
        r = {d.name: d.weight for d in reduced.domains}
        weights = {n: (r[self.frozen_name] * self.frozen[n] if n in self.frozen else r[n]) for n in full.names}
        mix = Mixture.from_weights(weights, template=full, name=name or reduced.name)
        mix.normalization = {}  # the weights sum to 1 up to rounding; no "normalised from" note
        return mix

    def reduce(self, weights: dict[str, float], old: bool, tolerance: float = DEFAULT_TOLERANCE
               ) -> tuple[dict[str, float] | None, str]:
        """Reduced weights of a run's full weights, or ``(None, why not)``.

        ``old``: the run trained on the old data, so an updated or removed domain must have had weight 0 in
        it, and an added domain did not exist (weight 0). A new run must name every domain of the plan.
        """
        w = {k: float(v) for k, v in weights.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if old:
            stale = [n for n in self.updated + self.removed if w.get(n, 0.0) > 0]
            if stale:
                kind = "updated" if stale[0] in self.updated else "removed"
                return None, f"trained on the old data of {kind} domain {stale[0]}"
            extra = sorted(set(w) - set(self.frozen) - set(self.free) - set(self.removed))
            if extra:
                return None, f"has domain {extra[0]}, which the old mixture did not"
        else:
            missing = [n for n in list(self.frozen) + self.free if n not in w]
            if missing:
                return None, f"has no weight for {missing[0]}"
        total = sum(w.get(n, 0.0) for n in list(self.frozen) + self.free)
        if total <= 0:
            return None, "has no weight on any domain of the plan"
        group = sum(w.get(n, 0.0) for n in self.frozen)
        off = max(abs(w.get(n, 0.0) - group * ratio) for n, ratio in self.frozen.items())
        if off > tolerance:
            return None, f"its untouched domains are not in the frozen ratios (off by {off:.3g} > {tolerance:g})"
        out = {self.frozen_name: group / total}
        out.update({n: w.get(n, 0.0) / total for n in self.free})
        return out, ""

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("folder", None)
        return {"version": 1, "tool": "regmix reuse plan", "regmix_version": __version__, **d}

    def save(self, folder: str | os.PathLike) -> Path:
        self.folder = Path(folder).resolve()
        return atomic_write_json(self.folder / PLAN_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReusePlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        data = read_json_file(path, ReuseError, str(path), "reuse plan", "write one with `regmix reuse plan`")
        if not isinstance(data, dict) or data.get("tool") != "regmix reuse plan" or data.get("version") != 1:
            raise ReuseError(f"{path}: not a reuse plan (tool/version); write one with `regmix reuse plan`")
        plan = validate(cls, {k: v for k, v in data.items() if k not in _FILE_HEADER}, str(path))
        if abs(sum(plan.frozen.values()) - 1) > 1e-9 or not plan.free:
            raise ReuseError(f"{path}: frozen ratios must sum to 1 and free must list a domain; rewrite the plan")
        plan.folder = path.resolve().parent
        return plan


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


def load_plan(path: str | os.PathLike) -> ReusePlan:
    return ReusePlan.load(path)

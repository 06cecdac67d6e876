"""The ``regmix.json`` mixture format (version 1): typed dataclasses, validation at load, atomic save.

A mixture names the domains of a pretraining run, the Megatron data prefixes of each, and its weight.
Everything about *how* the blend is built (sequence length, sample counts, seeds) belongs to the dataset
builder (`regmix_plugin.data.blend`), and what a mixture becomes for a launch (Megatron flags, Bridge
overrides) to the export formats (`regmix_plugin.export`), not here.

Example::

    {
      "version": 1,
      "name": "regmix-opt",
      "domains": [
        {"name": "web",  "weight": 0.6, "prefixes": ["/data/web_text_document"], "tokens": 123456,
         "valid_prefixes": ["/data/web_valid_text_document"]},
        {"name": "code", "weight": 0.4, "prefixes": ["/data/code_text_document"]}
      ],
      "provenance": {"tool": "regmix optimize", "version": "0.1.0", "predictor": "lightgbm"}
    }

Weights are normalised to sum to 1 on load; the raw sum is kept in ``normalization`` so that the file
says what was done to it. A weight of 0 is legal: the domain is left out of the training blend (megatron-core
asserts every blend weight is > 0) and is still evaluated for per-domain validation loss.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from regmix_plugin import __version__
from regmix_plugin.config_schema import BeforeChecked, Checked, Number, config, validate
from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json

FORMAT_VERSION = 1


class MixtureError(RegmixError):
    """A mixture file is malformed; the message names the field path and the fix."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# The rules of single fields: each returns the value or raises with what is wrong, and the validation layer
# (regmix_plugin/config_schema.py) puts the field path in front.
def _prefix(p: Any) -> str:
    if not isinstance(p, str) or not p:
        raise MixtureError(f"expected a path string, got {p!r}")
    if any(ord(c) < 32 for c in p):
        raise MixtureError(f"{p!r} contains a control character (newline, tab, NUL); fix the path")
    if p.endswith((".bin", ".idx")):
        raise MixtureError(f"{p!r} ends in .bin/.idx; give the prefix without the extension")
    return p


def _prefix_list(required: bool) -> Any:
    def check(value: Any) -> Any:
        if value is None and not required:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or (required and not value):
            raise MixtureError("expected a non-empty list of Megatron data prefixes (path without .bin/.idx)")
        return value

    return Annotated[list[Checked(_prefix, str)], BeforeChecked(check)]


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise MixtureError(f"expected a non-empty string, got {name!r}")
    if any(c in name for c in "/\\ \t\n,"):
        raise MixtureError(f"{name!r} contains '/', ',' or whitespace; use letters, digits, '-', '_' or '.'")
    return name


def _weight(weight: Any) -> Any:
    if not _is_number(weight):
        raise MixtureError(f"expected a number, got {weight!r}")
    try:
        float(weight)
    except OverflowError:
        raise MixtureError("the integer is too large for a float; weights must be finite numbers >= 0") from None
    if math.isnan(weight) or math.isinf(weight):
        raise MixtureError(f"{weight} is not finite; weights must be finite numbers >= 0")
    if weight < 0:
        raise MixtureError(f"{weight} is negative; weights must be >= 0")
    return weight


def _version(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v != FORMAT_VERSION:
        raise MixtureError(f"{v!r} is not supported; this is format version {FORMAT_VERSION}")
    return v


def _mixture_name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise MixtureError(f"expected a non-empty string, got {v!r}")
    return v


def _object(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise MixtureError("expected an object (JSON dict)")
    return dict(v)  # a copy: the mixture never shares (nor changes) the caller's dict


@config(allowed="allowed keys are ", error=MixtureError)
class Domain:
    """One data domain: a name, its Megatron data prefixes and its share of the training tokens."""

    name: Checked(_name, str)
    weight: Checked(_weight, float)
    prefixes: _prefix_list(required=True)
    # token count of the training prefixes, when known (the prior)
    tokens: Number(integer=True, ge=0, says="expected a non-negative integer token count, got {value}") | None = None
    valid_prefixes: _prefix_list(required=False) = field(default_factory=list)  # held-out validation data
    test_prefixes: _prefix_list(required=False) = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "weight": self.weight, "prefixes": list(self.prefixes)}
        if self.tokens is not None:
            d["tokens"] = self.tokens
        if self.valid_prefixes:
            d["valid_prefixes"] = list(self.valid_prefixes)
        if self.test_prefixes:
            d["test_prefixes"] = list(self.test_prefixes)
        return d


def check_domain_name(name: Any, where: str) -> str:
    """The rule for a domain name, for callers that name domains before any mixture exists (corpus build)."""
    try:
        return _name(name)
    except MixtureError as e:
        raise MixtureError(f"{where}: {e}") from None


@config(allowed="allowed keys are ", error=MixtureError)
class Mixture:
    """A validated, normalised mixture. Construct with :meth:`from_dict`, :meth:`load` or :meth:`from_weights`.

    Building one never changes what it was given: normalising makes new Domain objects and a new
    ``normalization`` record."""

    domains: list[Domain]
    name: Checked(_mixture_name, str) = "mixture"
    provenance: Checked(_object, dict) = field(default_factory=dict)
    normalization: Checked(_object, dict) = field(default_factory=dict)
    version: Checked(_version, int) = FORMAT_VERSION  # required in a file (from_dict says so)
    # Folder that relative prefixes are resolved against: the mixture file's folder when loaded from disk.
    base_dir: str | None = field(default=None, repr=False, compare=False)

    # ---- construction -------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()
        self._normalise()

    def validate(self) -> None:
        """The rules across fields (each field's own rules ran when it was built)."""
        if not self.domains:
            raise MixtureError("domains: the list is empty; give at least one domain")
        seen: dict[str, int] = {}
        for i, d in enumerate(self.domains):
            if d.name in seen:
                raise MixtureError(f"domains[{i}].name: {d.name!r} duplicates domains[{seen[d.name]}]; names must be unique")
            seen[d.name] = i
        raw = self.normalization.get("raw_sum")
        if raw is not None and not (_is_number(raw) and math.isfinite(raw) and raw > 0):
            raise MixtureError(f"normalization.raw_sum: {raw!r} is not a positive number; delete the normalization block")
        try:
            total = math.fsum(d.weight for d in self.domains)
        except OverflowError:  # fsum raises instead of returning inf
            total = math.inf
        if total <= 0:
            raise MixtureError("domains[*].weight: the weights sum to 0; give at least one domain a positive weight")
        if not math.isfinite(total):
            raise MixtureError("domains[*].weight: the weights sum to infinity; scale them down (they are normalised anyway)")

    def _normalise(self) -> None:
        total = math.fsum(d.weight for d in self.domains)
        if abs(total - 1.0) > 1e-12:
            # Record the raw sum before overwriting it, unless an earlier load already recorded one.
            self.normalization = {"raw_sum": total, **self.normalization, "normalized": True}
            self.domains = [dataclasses.replace(d, weight=d.weight / total) for d in self.domains]
        else:
            self.domains = list(self.domains)  # our own list: the caller's may change later

    @classmethod
    def from_dict(cls, data: Any) -> "Mixture":
        if not isinstance(data, dict):
            raise MixtureError(f"<root>: expected a JSON object, got {type(data).__name__}")
        if "version" not in data:  # the one key whose fix the file format itself names
            raise MixtureError(f"version: missing; add \"version\": {FORMAT_VERSION}")
        return validate(cls, data)

    @classmethod
    def from_weights(
        cls,
        weights: dict[str, float] | list[tuple[str, float]],
        prefixes: dict[str, list[str]] | None = None,
        *,
        template: "Mixture | None" = None,
        name: str = "mixture",
        provenance: dict[str, Any] | None = None,
    ) -> "Mixture":
        """Build a mixture from ``{domain: weight}``, taking prefixes/tokens/validation sets from ``template``."""
        items = list(weights.items()) if isinstance(weights, dict) else list(weights)
        by_name = {d.name: d for d in template.domains} if template else {}
        domains = []
        for dname, w in items:
            base = by_name.get(dname)
            if prefixes and dname in prefixes:
                pre = list(prefixes[dname])
            elif base is not None:
                pre = list(base.prefixes)
            else:
                raise MixtureError(f"domains.{dname}.prefixes: no prefixes given and no template domain of that name")
            domains.append(
                Domain(
                    name=dname,
                    weight=float(w),
                    prefixes=pre,
                    tokens=base.tokens if base else None,
                    valid_prefixes=list(base.valid_prefixes) if base else [],
                    test_prefixes=list(base.test_prefixes) if base else [],
                )
            )
        mix = cls(domains=domains, name=name, provenance=dict(provenance or {}))
        # Prefixes copied from the template stay relative to the template's folder.
        mix.base_dir = template.base_dir if template else None
        return mix

    @classmethod
    def load(cls, path: str | os.PathLike, check_files: bool = False) -> "Mixture":
        path = Path(path)
        data = read_mixture_json(path)
        try:
            mix = cls.from_dict(data)
        except MixtureError as e:
            raise MixtureError(f"{path}: {e}") from None
        mix.base_dir = str(path.resolve().parent)
        if check_files:
            mix.check_files()
        return mix

    # ---- views --------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def weights(self) -> list[float]:
        return [d.weight for d in self.domains]

    def weight_of(self, name: str) -> float:
        for d in self.domains:
            if d.name == name:
                return d.weight
        raise MixtureError(f"domains: no domain named {name!r}; known: {', '.join(self.names)}")

    def reordered(self, names: list[str]) -> "Mixture":
        """A copy listing the same domains in the order of ``names`` (the content hash follows the order)."""
        by_name = {d.name: d for d in self.domains}
        if sorted(names) != sorted(by_name):
            raise MixtureError(f"domains: expected exactly {', '.join(names)}; this mixture lists {', '.join(self.names)}")
        mix = Mixture(domains=[copy.deepcopy(by_name[n]) for n in names], name=self.name,
                      provenance=dict(self.provenance), normalization=dict(self.normalization), version=self.version)
        mix.base_dir = self.base_dir
        return mix

    def train_domains(self) -> list[Domain]:
        """The domains that enter the training blend (weight > 0)."""
        return [d for d in self.domains if d.weight > 0]

    def content_hash(self) -> str:
        """A short hash of what determines training data: names, weights (rounded) and prefixes."""
        canon = [[d.name, round(d.weight, 12), list(d.prefixes)] for d in self.domains]
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "domains": [x.to_dict() for x in self.domains],
        }
        if self.normalization:
            d["normalization"] = dict(self.normalization)
        if self.provenance:
            d["provenance"] = dict(self.provenance)
        return d

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically. Relative prefixes are rewritten to point at the same files from the new folder."""
        new_dir = Path(path).resolve().parent
        return atomic_write_json(path, self.rebased(new_dir).to_dict())

    def rebased(self, new_dir: str | os.PathLike) -> "Mixture":
        """A copy whose relative prefixes name the same files when resolved from ``new_dir``."""
        new_dir = Path(new_dir).resolve()
        data = self.to_dict()
        if self.base_dir is not None and Path(self.base_dir).resolve() != new_dir:
            for d in data["domains"]:
                for key in ("prefixes", "valid_prefixes", "test_prefixes"):
                    if key in d:
                        d[key] = [p if os.path.isabs(p) else os.path.relpath(self.resolve(p), new_dir) for p in d[key]]
        out = Mixture.from_dict(data)
        out.base_dir = str(new_dir)
        return out

    def with_provenance(self, **fields: Any) -> "Mixture":
        """A copy whose provenance has ``fields`` added (and tool, version, time where it had none)."""
        prov = {"tool": "regmix", "version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        prov.update(self.provenance)
        prov.update(fields)
        return dataclasses.replace(self, provenance=prov)

    # ---- paths and checks ---------------------------------------------------------------------
    def resolve(self, prefix: str, base_dir: str | os.PathLike | None = None) -> str:
        """Relative prefixes are relative to the mixture file's folder (so a study folder can move)."""
        base_dir = base_dir if base_dir is not None else self.base_dir
        if base_dir is None or os.path.isabs(prefix):
            return prefix
        return os.path.normpath(os.path.join(base_dir, prefix))

    def check_files(self, base_dir: str | os.PathLike | None = None) -> None:
        for i, d in enumerate(self.domains):
            for field_name in ("prefixes", "valid_prefixes", "test_prefixes"):
                for j, p in enumerate(getattr(d, field_name)):
                    full = self.resolve(p, base_dir)
                    for ext in (".bin", ".idx"):
                        if not os.path.isfile(full + ext):
                            raise MixtureError(
                                f"domains[{i}].{field_name}[{j}]: {full}{ext} does not exist; "
                                "build it with `regmix corpus build` or Megatron's preprocess_data.py, or fix the prefix"
                            )


class _NonFiniteError(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFiniteError(f"{name} is not a valid JSON number")


def read_mixture_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of a mixture file; unreadable or malformed files are a one-line MixtureError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MixtureError(f"{path}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MixtureError(f"{path}: cannot read ({e.__class__.__name__}: {e}); give a UTF-8 JSON file") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteError as e:
        raise MixtureError(f"{path}: {e}; weights must be finite numbers >= 0") from None
    except json.JSONDecodeError as e:
        raise MixtureError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}; fix the JSON syntax") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits, absurd nesting
        raise MixtureError(f"{path}: malformed JSON ({e.__class__.__name__}: {str(e).splitlines()[0][:80]}); fix the JSON") from None


def is_weights_record(data: Any) -> bool:
    """A mixture file none of whose domains names prefixes: a record of a run's weights, not a trainable mixture."""
    doms = data.get("domains") if isinstance(data, dict) else None
    return isinstance(doms, list) and bool(doms) and all(isinstance(d, dict) and "prefixes" not in d for d in doms)


def weights_record(data: Any) -> dict[str, float]:
    """The weights ``{domain: weight}`` (as written, not renormalised) of a run's ``mixture.json``.

    The one rule for a run directory's mixture, used by `regmix validate`, `regmix collect` and
    `regmix scale`: either a full mixture (:meth:`Mixture.from_dict`) or a *weights record*, the same format
    with the prefixes left out (an imported run: ``{"domains": [{"name": "web", "weight": 0.6}, ...]}``;
    ``version`` and ``name`` optional). Names and weights are checked as in a full mixture.
    """
    if not is_weights_record(data):
        mix = Mixture.from_dict(data)
        raw = {d["name"]: d["weight"] for d in data["domains"]}  # from_dict checked them; keep them as written
        return {n: float(raw[n]) for n in mix.names}
    # The same rules as a mixture's, prefixes aside: check the record as the mixture it would be with them.
    domains = [{**d, "prefixes": ["-"]} for d in data["domains"]]
    validate(Mixture, {"version": FORMAT_VERSION, **data, "domains": domains})
    return {d["name"]: float(d["weight"]) for d in data["domains"]}


def load_weights_record(path: str | os.PathLike) -> dict[str, float]:
    """:func:`weights_record` of a file; errors name the file and the field."""
    data = read_mixture_json(path)
    try:
        return weights_record(data)
    except MixtureError as e:
        raise MixtureError(f"{path}: {e}") from None


def format_table(mix: Mixture) -> str:
    """The weights of a mixture as a text table for people (`regmix show`, `regmix corpus build`, `regmix reuse
    expand`): domain, weight, tokens and a bar, then its name and content hash."""
    width = max(len("domain"), *(len(d.name) for d in mix.domains))
    lines = [f"{'domain':<{width}}  {'weight':>8}  {'tokens':>14}  bar"]
    for d in mix.domains:
        tokens = f"{d.tokens:,}" if d.tokens is not None else "-"
        lines.append(f"{d.name:<{width}}  {d.weight:8.4f}  {tokens:>14}  {'#' * round(d.weight * 40)}")
    lines.append(f"{mix.name}: {len(mix.domains)} domains, hash {mix.content_hash()}")
    return "\n".join(lines)

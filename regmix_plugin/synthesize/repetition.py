"""Repetition-matched proxies: each small domain repeats in the proxy as often as in the target run.

A proxy reads ``P`` tokens, the target run ``T``. At mixture weight ``w`` the target reads domain ``d``
(``N_d`` tokens available) ``w T / N_d`` times; a proxy on the whole domain only ``w P / N_d`` times, so
with ``P << T`` proxies never see the repetition the target will ("Repetition Mismatch", arXiv
2606.07597). Training the proxy on a fraction ``f_d = P / T`` of the domain's documents makes its epoch
count ``w P / (f_d N_d) = w T / N_d``, the target's, at every weight at once. The fraction does not
depend on the weight, so one subsample per domain serves every run of a sweep, and every run sees the
same documents. A domain with ``N_d >= T`` cannot repeat in the target at any weight and is left whole
(a subset would change nothing but the proxy's variety); so is everything when ``P >= T``.

The study switches it on with a ``repetition:`` block (see docs/sweeps.md); the sweep writes the subsets
once under ``<out>/repetition/<digest>/`` and points each run's ``mixture.json`` at them. Validation is
untouched: ``valid_prefixes`` stay as they are, and a domain without them keeps being evaluated on its
whole training prefixes (as without matching), not on the subset. Any trainer that reads the run's
mixture (the built-in one, Megatron-LM's ``--data-mixture-from``) trains on the subsets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from regmix_plugin.config_schema import Number, Switch, config, validate
from regmix_plugin.errors import ConfigError
from regmix_plugin.io import atomic_write_json, read_json_file
from regmix_plugin.mixture import Mixture

# What `match: auto` (the default) does when the study knows the target's token budget. Set by the
# measurement in BENCHMARKS.md ("Repetition-matched proxies").
AUTO_MATCHES = False
MANIFEST = "repetition.json"


TokenCount = Number(gt=0, parse_str=True, expect="a positive token count such as 2.5e10")


@config(prefix="repetition")
class RepetitionConfig:
    """The study's ``repetition:`` block."""

    match: Switch = "auto"  # true, false, or auto: on with target_tokens; with synthesize's, AUTO_MATCHES
    target_tokens: TokenCount | None = None  # tokens of the target run; default: synthesize.target_tokens
    proxy_tokens: TokenCount | None = None  # tokens one proxy run reads; default: from proxy_config
    seed: Number(integer=True, ge=0) = 0  # which documents each subset keeps

    @classmethod
    def from_dict(cls, data: Any) -> "RepetitionConfig":
        return validate(cls, {} if data is None else data, prefix="repetition")


@dataclass
class DomainSubset:
    name: str
    tokens: int  # available training tokens (the source prefixes)
    fraction: float  # requested share of the tokens; 1 = whole
    kept_tokens: int
    documents: int
    kept_documents: int
    prefixes: list[str]  # the subset's prefixes (absolute), or the source prefixes when whole
    source_prefixes: list[str]

    @property
    def whole(self) -> bool:
        return self.fraction >= 1


@dataclass
class RepetitionPlan:
    target_tokens: float
    proxy_tokens: float
    seed: int
    folder: Path | None  # where the subsets are; None when nothing is subsampled
    domains: dict[str, DomainSubset] = field(default_factory=dict)

    def apply(self, mix: Mixture) -> Mixture:
        """``mix`` with each subsampled domain's training prefixes replaced by its subset."""
        data = mix.to_dict()
        for d in data["domains"]:
            sub = self.domains.get(d["name"])
            if sub is None or sub.whole:
                continue
            if not d.get("valid_prefixes"):
                # The in-sample fallback evaluates on the training prefixes: keep it on the whole domain.
                d["valid_prefixes"] = [mix.resolve(p) for p in d["prefixes"]]
            d["prefixes"] = list(sub.prefixes)
            d["tokens"] = sub.kept_tokens
        out = Mixture.from_dict(data)
        out.base_dir = mix.base_dir
        out.provenance["repetition"] = {
            "target_tokens": self.target_tokens, "proxy_tokens": self.proxy_tokens, "seed": self.seed,
            "fractions": {n: s.kept_tokens / s.tokens for n, s in self.domains.items() if not s.whole},
        }
        return out

    def describe(self) -> list[str]:
        """One line per domain: what the proxy trains on and how often the target repeats it at weight 1."""
        lines = [f"repetition matching: target {self.target_tokens:.4g} tokens, proxy {self.proxy_tokens:.4g} "
                 f"(1/{self.target_tokens / self.proxy_tokens:.3g})"]
        for s in self.domains.values():
            epochs = self.target_tokens / max(s.tokens, 1)
            if s.whole:
                lines.append(f"  {s.name}: whole ({s.tokens:,} tokens; the target reads it at most {epochs:.2f}x)")
            else:
                lines.append(f"  {s.name}: {s.kept_documents:,} of {s.documents:,} documents, {s.kept_tokens:,} of "
                             f"{s.tokens:,} tokens (epochs at weight 1: target {epochs:.2f}, proxy "
                             f"{self.proxy_tokens / max(s.kept_tokens, 1):.2f})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"target_tokens": self.target_tokens, "proxy_tokens": self.proxy_tokens, "seed": self.seed,
                "folder": str(self.folder) if self.folder else None,
                "domains": {n: asdict(s) for n, s in self.domains.items()}}


_SET = re.compile(r"^(train\.steps|train\.global_batch_size|model\.seq_length)=(.+)$")


def proxy_tokens_from_config(config: Path | None, command: str) -> float:
    """Tokens one proxy run reads: ``steps x global_batch_size x seq_length`` of the regmix proxy config,
    after the command's own ``--set`` overrides of those keys."""
    from regmix_plugin.proxy.config import ProxyConfig, apply_override

    hint = "give repetition.proxy_tokens (the tokens one proxy run reads)"
    if config is None:
        raise ConfigError(f"repetition.proxy_tokens: the study has no proxy_config to read it from; {hint}")
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    overrides = [w for prev, w in zip([""] + words, words) if prev == "--set" and _SET.match(w)]
    try:
        import yaml

        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        for item in overrides:
            if "{" not in item:
                apply_override(raw, item)
        cfg = ProxyConfig.from_dict(raw, where=str(config))
    except (ConfigError, OSError, AttributeError, TypeError) as e:
        raise ConfigError(f"repetition.proxy_tokens: {config} is not a regmix proxy config ({e}); {hint}") from None
    except Exception as e:  # noqa: BLE001  (a YAML parse error of a non-regmix config)
        raise ConfigError(f"repetition.proxy_tokens: cannot read {config} ({type(e).__name__}); {hint}") from None
    return float(cfg.train.steps * cfg.train.global_batch_size * cfg.model.seq_length)


def resolve_budgets(cfg: RepetitionConfig, synth_target: float | None, proxy_config: Path | None,
                    command: str) -> tuple[float, float] | None:
    """``(target_tokens, proxy_tokens)`` when matching is on for this study, else None."""
    target = cfg.target_tokens if cfg.target_tokens is not None else synth_target
    if cfg.match is False:
        return None
    # auto: on when the study gives repetition.target_tokens (the one key that asks for it); a study that only
    # knows the budget from synthesize.target_tokens gets what the measurement chose (AUTO_MATCHES).
    if cfg.match == "auto" and cfg.target_tokens is None and not (AUTO_MATCHES and synth_target is not None):
        return None
    if target is None:
        raise ConfigError("repetition.target_tokens: matching needs the target run's token budget; set "
                          "repetition.target_tokens (or synthesize.target_tokens), e.g. 2.5e10")
    proxy = cfg.proxy_tokens if cfg.proxy_tokens is not None else proxy_tokens_from_config(proxy_config, command)
    return float(target), float(proxy)


def fractions(tokens: dict[str, int], target_tokens: float, proxy_tokens: float) -> dict[str, float]:
    """The share of each domain a proxy trains on: ``P / T`` for domains the target can repeat, else 1."""
    ratio = proxy_tokens / target_tokens
    return {n: (ratio if ratio < 1 and t < target_tokens else 1.0) for n, t in tokens.items()}


def build_plan(base: Mixture, target_tokens: float, proxy_tokens: float, seed: int, out: Path) -> RepetitionPlan:
    """Count each domain's tokens from its ``.idx`` files, and write the subsets (once: a rerun with the same
    inputs finds them under the same digest) into ``out/repetition/<digest>/``."""
    from regmix_plugin.data.indexed import index_stats
    from regmix_plugin.data.subsample import stable_seed, subsample_documents

    sources: dict[str, list[tuple[str, int, int]]] = {}
    for k, d in enumerate(base.domains):
        rows = []
        for j, p in enumerate(d.prefixes):
            path = base.resolve(p)
            st = index_stats(path, f"base_mixture domains[{k}].prefixes[{j}]")
            rows.append((os.path.abspath(path), st.tokens, st.documents))
        sources[d.name] = rows
    tokens = {n: sum(t for _, t, _ in rows) for n, rows in sources.items()}
    frac = fractions(tokens, target_tokens, proxy_tokens)
    key = json.dumps({"sources": sources, "fractions": frac, "seed": seed}, sort_keys=True)
    digest = f"{stable_seed(key):016x}"[:12]
    out = Path(out).resolve()
    folder = out / "repetition" / digest
    if any(f < 1 for f in frac.values()) and not (folder / MANIFEST).is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=_mkdir(out / "repetition")))
        try:
            stats = {}
            for n, rows in sources.items():
                if frac[n] >= 1:
                    continue
                (tmp / n).mkdir()
                stats[n] = [asdict(subsample_documents(src, str(tmp / n / f"train{j}"), frac[n],
                                                       stable_seed(seed, n, j), f"domains.{n}.prefixes[{j}]"))
                            for j, (src, _, _) in enumerate(rows)]
            atomic_write_json(tmp / MANIFEST, {"version": 1, "target_tokens": target_tokens,
                                               "proxy_tokens": proxy_tokens, "seed": seed, "fractions": frac,
                                               "subsets": stats})
            try:
                os.replace(tmp, folder)
            except OSError:
                if not (folder / MANIFEST).is_file():  # not a concurrent sweep that finished first
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    manifest = (read_json_file(folder / MANIFEST, ConfigError, str(folder / MANIFEST), "repetition manifest",
                               f"delete {folder} and rerun: the subsets are rebuilt from the corpus")
                if (folder / MANIFEST).is_file() else {"subsets": {}})
    plan = RepetitionPlan(target_tokens, proxy_tokens, seed, folder if manifest["subsets"] else None)
    for n, rows in sources.items():
        subs = manifest["subsets"].get(n)
        if subs is None:
            plan.domains[n] = DomainSubset(n, tokens[n], 1.0, tokens[n], sum(r[2] for r in rows),
                                           sum(r[2] for r in rows), [r[0] for r in rows], [r[0] for r in rows])
        else:
            plan.domains[n] = DomainSubset(
                n, tokens[n], frac[n], sum(s["kept_tokens"] for s in subs), sum(s["documents"] for s in subs),
                sum(s["kept_documents"] for s in subs),
                [str(folder / n / f"train{j}") for j in range(len(subs))], [r[0] for r in rows])
    return plan


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p

"""Mixture synthesis for proxy sweeps: RegMix's sampler, with fixes for rare domains and token caps.

RegMix (arXiv 2407.01492, ``mixture_config/synthesize_mixture.py``) samples proxy mixtures like this:

1. the **prior** is each domain's share of the available training tokens, raised to a **temperature**
   (``< 1`` flattens a skewed corpus) and renormalised;
2. each candidate is a Dirichlet draw ``Dir(strength * prior)``, where ``strength`` is one of
   ``num_strengths`` log-spaced values in ``[min_strength, max_strength]`` picked at random (small strength:
   sparse, extreme mixtures; large: close to the prior);
3. a candidate that gives a domain more than ``max_usage`` times its (untempered) token share is rejected;
4. weights below ``minimum`` are set to 0, the rest renormalised and rounded to multiples of ``minimum``;
5. duplicates are dropped; the same ``seed`` always gives the same mixtures.

RegMix draws 100x the number it needs and subsamples at random; we instead take accepted candidates in
draw order until we have enough (``max_candidates`` bounds the work). For i.i.d. Dirichlet draws that is
the same distribution, and it keeps a quasi-random (``sobol``) sequence in its space-filling order.

Differences we add, all off by default except where RegMix has the same behaviour:

- ``min_weight``: every domain gets at least this weight (an affine map of the draw, so it stays a
  mixture); ``nonzero``: the named domains (or ``all``) get at least one rounding quantum. Both fix the
  collapse of rare domains to 0 that otherwise happens in most RegMix samples.
- ``sampler: sobol``: scrambled Sobol points mapped to the same Dirichlet through the inverse gamma CDF
  (one extra Sobol dimension stratifies the strength). Coverage versus plain Dirichlet is measured by
  ``bench/synthesize.py`` with :func:`coverage`.
- token-availability caps: with ``target_tokens`` set, ``weight_d <= tokens_d * max_epochs / target_tokens``
  so that the large run would repeat no domain more than ``max_epochs`` times.
- rounding uses the largest-remainder method, so the written weights sum to exactly 1.
- ``heldout`` extra mixtures from the same stream, written apart, to test the fitted predictor honestly.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy.stats import qmc

from regmix_plugin import __version__
from regmix_plugin.config_schema import Checked, Choice, Text, config, validate
from regmix_plugin.errors import ConfigError, RegmixError
from regmix_plugin.io import atomic_write_json
from regmix_plugin.mixture import Mixture
from regmix_plugin.data.token_counts import domain_token_counts, token_cap
from regmix_plugin.synthesize.config import SynthConfig
from regmix_plugin.table import weight_column, write_runs

MANIFEST = "manifest.json"


@dataclass
class Plan:
    """What the sampler works with, derived from the config and the base mixture (saved in the manifest)."""

    names: list[str]
    prior: np.ndarray  # tempered prior the Dirichlet is centred on
    share: np.ndarray  # untempered share (token share when counts are known), for max_usage
    tokens: dict[str, int] | None
    floor: np.ndarray  # lower bound per domain
    upper: np.ndarray  # upper bound per domain (max_usage and token caps)
    strengths: np.ndarray


def plan(cfg: SynthConfig, base: Mixture) -> Plan:
    names = base.names
    tokens = None
    if cfg.prior_weights is not None:
        unknown = sorted(set(cfg.prior_weights) - set(names))
        if unknown:
            raise ConfigError(f"synthesize.prior_weights.{unknown[0]}: not a domain of the base mixture")
        share = np.array([float(cfg.prior_weights.get(n, 0.0)) for n in names])
    elif cfg.prior == "weights":
        share = np.array(base.weights, dtype=float)
    elif cfg.prior == "uniform":
        share = np.ones(len(names))
    else:
        tokens = domain_token_counts(base, cfg.prior)
        share = np.array([tokens[n] for n in names], dtype=float)
    if (share < 0).any() or share.sum() <= 0 or (share == 0).any():
        zero = names[int(np.argmin(share))]
        raise ConfigError(f"synthesize.prior: domain {zero!r} has prior share 0; give it tokens or drop it")
    share = share / share.sum()
    prior = share ** cfg.temperature
    prior = prior / prior.sum()

    upper = np.ones(len(names))
    if cfg.max_usage is not None:
        upper = np.minimum(upper, share * cfg.max_usage)
    if cfg.target_tokens is not None:
        if tokens is None:
            tokens = domain_token_counts(base, "auto")
        avail = np.array([tokens[n] for n in names], dtype=float)
        upper = np.minimum(upper, token_cap(avail, cfg.max_epochs, cfg.target_tokens))

    nonzero = names if cfg.nonzero == "all" else list(cfg.nonzero)
    bad = sorted(set(nonzero) - set(names))
    if bad:
        raise ConfigError(f"synthesize.nonzero: {bad[0]!r} is not a domain; known: {', '.join(names)}")
    floor = np.full(len(names), cfg.min_weight)
    for n in nonzero:
        floor[names.index(n)] = max(floor[names.index(n)], cfg.minimum)
    if floor.sum() >= 1:
        raise ConfigError(f"synthesize.min_weight: floors sum to {floor.sum():.4g} >= 1; lower min_weight")
    if (floor > upper + 1e-12).any():
        i = int(np.argmax(floor - upper))
        raise ConfigError(
            f"synthesize.min_weight: domain {names[i]!r} must get >= {floor[i]:.4g} but its cap is {upper[i]:.4g}; "
            "lower min_weight or raise max_usage/max_epochs"
        )
    if upper.sum() < 1 - 1e-9:
        raise ConfigError(
            f"synthesize.max_usage/max_epochs: the per-domain caps sum to {upper.sum():.4g} < 1, so no mixture fits; "
            "raise max_usage or max_epochs, or lower target_tokens"
        )
    if cfg.num_strengths == 1 or cfg.min_strength == cfg.max_strength:
        strengths = np.array([cfg.min_strength])
    else:
        strengths = np.logspace(np.log10(cfg.min_strength), np.log10(cfg.max_strength), cfg.num_strengths)
    return Plan(names, prior, share, tokens, floor, upper, strengths)


def _dirichlet_batch(rng: np.random.Generator, p: Plan, size: int) -> np.ndarray:
    which = rng.integers(len(p.strengths), size=size)
    out = np.empty((size, len(p.names)))
    for k, s in enumerate(p.strengths):
        rows = np.flatnonzero(which == k)
        if rows.size:
            out[rows] = rng.dirichlet(p.prior * s, size=rows.size)
    return out


def _gamma_ppf_log(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``log`` of the gamma(a) quantile of ``u``; falls back to the small-``a`` series when it underflows.

    For a Dirichlet with tiny concentrations (strength 0.1 x a 0.1% domain) the quantile is below the
    smallest double; ``P(a, x) ~ x^a / Gamma(a + 1)`` gives its log directly.
    """
    x = special.gammaincinv(a, u)
    with np.errstate(divide="ignore"):
        logx = np.log(x)
    small = ~np.isfinite(logx)
    if small.any():
        aa = np.broadcast_to(a, u.shape)[small]
        logx[small] = (np.log(u[small]) + special.gammaln(aa + 1)) / aa
    return logx


def _sobol_batches(rng: np.random.Generator, p: Plan):
    d = len(p.names)
    engine = qmc.Sobol(d=d + 1, scramble=True, seed=rng)
    m = 6
    while True:
        # Each block doubles the points drawn so far, so every prefix of the sequence is a power of two
        # and keeps Sobol's balance properties.
        u = engine.random_base2(m)
        m = int(np.log2(engine.num_generated))
        which = np.minimum((u[:, d] * len(p.strengths)).astype(int), len(p.strengths) - 1)
        alpha = p.prior[None, :] * p.strengths[which][:, None]  # (batch, d)
        logg = _gamma_ppf_log(np.clip(u[:, :d], 1e-300, 1 - 1e-16), alpha)
        logg -= logg.max(axis=1, keepdims=True)
        g = np.exp(logg)
        yield g / g.sum(axis=1, keepdims=True)


def _round_units(w: np.ndarray, units: int) -> np.ndarray:
    """Integer counts of ``1/units`` per domain summing to ``units`` (largest-remainder rounding), per row."""
    x = w * units
    k = np.floor(x + 1e-9).astype(np.int64)  # 1e-9: a floor weight like 0.002 must not round down by float error
    rem = units - k.sum(axis=1)
    frac = x - k
    order = np.argsort(-frac, axis=1, kind="stable")
    for i in range(w.shape[0]):
        k[i, order[i, : rem[i]]] += 1
    return k


def postprocess(raw: np.ndarray, cfg: SynthConfig, p: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Floors, zeroing, rounding and the caps: ``(counts (batch, d) ints, accepted mask)``."""
    units = round(1 / cfg.minimum)
    w = p.floor + (1 - p.floor.sum()) * raw
    w = np.where(w < cfg.minimum, 0.0, w)
    total = w.sum(axis=1, keepdims=True)
    ok = total[:, 0] > 0
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    k = _round_units(w, units)
    final = k / units
    ok &= (final <= p.upper + 1e-12).all(axis=1) & (final >= p.floor - 1e-12).all(axis=1)
    return k, ok


@dataclass
class SynthResult:
    names: list[str]
    weights: np.ndarray  # (n, d), rows sum to 1
    heldout: np.ndarray  # (heldout, d)
    plan: Plan
    stats: dict[str, int]



def keep_distinct(rows: np.ndarray, ok: np.ndarray, kept: list[np.ndarray], seen: set[bytes], stats: dict,
                  budget: int, want: int) -> None:
    """Append to ``kept`` the rows (integer units) that passed the caps and were not drawn before, counting
    candidates, rejections and duplicates in ``stats``, until ``want`` are kept or ``budget`` draws are spent.
    Mixtures and schedules (synthesize/phases.py) are accepted by this one rule."""
    for row, good in zip(rows, ok):
        if stats["candidates"] >= budget or len(kept) >= want:
            break
        stats["candidates"] += 1
        if not good:
            stats["rejected"] += 1
            continue
        key = row.tobytes()
        if key in seen:
            stats["duplicates"] += 1
            continue
        seen.add(key)
        kept.append(row)


def too_few(kept: int, budget: int, want: int, what: str) -> RegmixError:
    return RegmixError(
        f"synthesize: only {kept} distinct {what} passed the caps in {budget} draws, {want} needed; "
        "raise max_usage/max_epochs/max_strength or max_candidates, lower minimum, or ask for fewer"
    )

def synthesize(cfg: SynthConfig, base: Mixture) -> SynthResult:
    """Draw ``cfg.n + cfg.heldout`` distinct mixtures over the base mixture's domains (deterministic in seed)."""
    p = plan(cfg, base)
    rng = np.random.default_rng(cfg.seed)
    want = cfg.n + cfg.heldout
    budget = cfg.max_candidates or 100 * want
    units = round(1 / cfg.minimum)
    seen: set[bytes] = set()
    kept: list[np.ndarray] = []
    stats = {"candidates": 0, "rejected": 0, "duplicates": 0}
    batches = _sobol_batches(rng, p) if cfg.sampler == "sobol" else None
    while len(kept) < want and stats["candidates"] < budget:
        raw = next(batches) if batches is not None else _dirichlet_batch(rng, p, 256)
        k, ok = postprocess(raw, cfg, p)
        keep_distinct(k, ok, kept, seen, stats, budget, want)
    if len(kept) < want:
        raise too_few(len(kept), budget, want, "mixtures")
    w = np.stack(kept) / units
    return SynthResult(p.names, w[: cfg.n], w[cfg.n:], p, stats)


def write_synthesis(cfg: SynthConfig, base: Mixture, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write ``n0001.json``..., ``heldout/h0001.json``..., ``weights.csv`` and ``manifest.json`` in ``out_dir``."""
    out = Path(out_dir)
    existing = sorted(out.glob("n[0-9]*.json")) + sorted(out.glob("heldout/h[0-9]*.json"))
    if existing and not overwrite:
        raise RegmixError(f"--out {out}: already holds mixtures ({existing[0].name}); pick a new folder or pass --overwrite")
    if cfg.phases:
        sched = sorted(out.glob("n[0-9]*/" + SCHEDULE_FILE)) + sorted(out.glob("heldout/h[0-9]*/" + SCHEDULE_FILE))
        if sched and not overwrite:
            raise RegmixError(f"--out {out}: already holds schedules ({sched[0].parent.name}); pick a new folder or "
                              "pass --overwrite")
        return _write_schedules(cfg, base, out, existing + sched)
    for f in existing:
        f.unlink()
    res = synthesize(cfg, base)
    prov = {"tool": "regmix synthesize", "version": __version__, "seed": cfg.seed, "sampler": cfg.sampler,
            "config_digest": cfg.digest()}
    entries = write_mixture_files(out, base, res.names, [("train", "n", out, res.weights),
                                                         ("heldout", "h", out / "heldout", res.heldout)], prov)
    manifest = _manifest(cfg, res.plan, res.stats, entries)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _manifest(cfg: SynthConfig, p: Plan, stats: dict, entries: list[dict], phases: dict | None = None) -> dict:
    """``manifest.json`` of a synthesis, mixtures or schedules (``phases``: their starts, lengths and mode;
    there the caps bound each domain's exposure over the whole schedule, sum_k length_k * w_kd)."""
    head = {"version": 1, "tool": "regmix synthesize", "regmix_version": __version__, "config": asdict(cfg),
            "config_digest": cfg.digest(), "domains": p.names}
    return {**head, **({"phases": phases} if phases is not None else {}),
            "prior": dict(zip(p.names, map(float, p.prior))),
            "token_share": dict(zip(p.names, map(float, p.share))),
            "tokens": p.tokens,
            "upper_bound": dict(zip(p.names, map(float, p.upper))),
            "floor": dict(zip(p.names, map(float, p.floor))),
            "strengths": [float(s) for s in p.strengths],
            "stats": stats,
            "mixtures": entries}


SCHEDULE_FILE = "schedule.yaml"


def _write_schedules(cfg: SynthConfig, base: Mixture, out: Path, old: list[Path]) -> dict:
    """Schedules: ``n0001/schedule.yaml`` with ``n0001/phase0.json``... per candidate (heldout/h0001/...),
    ``weights.csv`` with ``weight/p<k>/<domain>`` and ``phase/p<k>/start`` columns, and ``manifest.json``."""
    import shutil

    import yaml

    from regmix_plugin.io import atomic_write_text
    from regmix_plugin.schedule import Schedule
    from regmix_plugin.synthesize.phases import phase_lengths, synthesize_schedules
    from regmix_plugin.table import phase_start_column, phase_weight_column

    p = plan(cfg, base)
    res = synthesize_schedules(cfg, p)  # before anything is removed: a failed draw leaves the folder as it was
    for f in old:
        if f.name == SCHEDULE_FILE:
            shutil.rmtree(f.parent)
        else:
            f.unlink()
    starts = [0.0, *map(float, cfg.phases)]
    doc = {"phases": [{"fraction": s, "mixture": f"phase{k}.json"} for k, s in enumerate(starts)]}
    Schedule.from_dict(doc, out)  # the one config layer checks the schedule before anything is written
    entries, rows = [], []
    for split, prefix, folder, block in (("train", "n", out, res.weights), ("heldout", "h", out / "heldout", res.heldout)):
        width = max(4, len(str(len(block))))
        for i, sched in enumerate(block, start=1):
            run_id = f"{prefix}{i:0{width}d}"
            cand = folder / run_id
            template = base.rebased(cand)
            hashes = []
            for k, row in enumerate(sched):
                mix = Mixture.from_weights(
                    dict(zip(p.names, (float(x) for x in row))), template=template, name=f"{run_id}-phase{k}",
                    provenance={"tool": "regmix synthesize", "version": __version__, "seed": cfg.seed,
                                "phase": k, "phase_start": starts[k], "phase_mode": cfg.phase_mode,
                                "config_digest": cfg.digest(), "split": split},
                )
                mix.save(cand / f"phase{k}.json")
                hashes.append(mix.content_hash())
            atomic_write_text(cand / SCHEDULE_FILE, yaml.safe_dump(doc, sort_keys=False))
            entries.append({"run_id": run_id, "split": split, "file": str((cand / SCHEDULE_FILE).relative_to(out)),
                            "hash": ":".join(hashes)})
            row = {"run_id": run_id, "split": split, "status": "pending"}
            for k, wk in enumerate(sched):
                row.update({phase_weight_column(k, n): float(x) for n, x in zip(p.names, wk)})
            row.update({phase_start_column(k): starts[k] for k in range(1, len(starts))})
            rows.append(row)
    write_runs(pd.DataFrame(rows), out / "weights.csv")
    manifest = _manifest(cfg, p, res.stats, entries,
                         {"starts": starts, "lengths": phase_lengths(cfg.phases).tolist(), "mode": cfg.phase_mode})
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def write_mixture_files(out: Path, base: Mixture, names: list[str], blocks, provenance: dict,
                        per_row: list[dict] | None = None) -> list[dict]:
    """Write each block ``(split, id prefix, folder, weights)`` as ``<prefix>0001.json``... with ``provenance``
    (plus ``per_row[i]`` for the i-th mixture written), and ``weights.csv``; returns the manifest entries."""
    entries, k = [], 0
    for split, prefix, folder, block in blocks:
        template = base.rebased(folder)
        width = max(4, len(str(len(block))))
        for i, row in enumerate(block, start=1):
            run_id = f"{prefix}{i:0{width}d}"
            extra = per_row[k] if per_row else {}
            k += 1
            mix = Mixture.from_weights(dict(zip(names, (float(x) for x in row))), template=template, name=run_id,
                                       provenance={**provenance, "split": split, **extra})
            path = folder / f"{run_id}.json"
            mix.save(path)
            entries.append({"run_id": run_id, "split": split, "file": str(path.relative_to(out)),
                            "hash": mix.content_hash()})
    rows = [dict(run_id=e["run_id"], split=e["split"]) for e in entries]
    weights = np.vstack([b[3] for b in blocks if len(b[3])]) if entries else np.zeros((0, len(names)))
    write_runs(_weights_table(rows, weights, names), out / "weights.csv")
    return entries


def _weights_table(rows: list[dict], w: np.ndarray, names: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df.insert(1, "status", "pending")
    for j, n in enumerate(names):
        df[weight_column(n)] = w[:, j]
    return df


# ---- coverage of the simplex (used by bench/synthesize.py and the tests) -------------------------
def coverage(w: np.ndarray, reference: np.ndarray | None = None) -> dict[str, float]:
    """How well a set of mixtures ``w`` (n, d) covers the simplex.

    - ``nn_min`` / ``nn_mean``: min and mean L1 distance from each mixture to its nearest other mixture
      (larger: less clumping);
    - ``fill_mean`` / ``fill_max``: mean and max L1 distance from each ``reference`` point (e.g. uniform
      draws on the simplex) to its nearest mixture (smaller: fewer holes);
    - ``zero_frac_max`` / ``zero_frac_mean``: share of mixtures giving a domain weight 0, worst and mean
      over domains (rare-domain collapse).
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(w)
    nn = tree.query(w, k=2, p=1)[0][:, 1]  # the nearest point other than itself
    zero = (w <= 0).mean(axis=0)
    out = {"nn_min": float(nn.min()), "nn_mean": float(nn.mean()),
           "zero_frac_max": float(zero.max()), "zero_frac_mean": float(zero.mean())}
    if reference is not None:
        fill = tree.query(reference, k=1, p=1)[0]
        out.update(fill_mean=float(fill.mean()), fill_max=float(fill.max()))
    return out


def per_domain_zero_fraction(w: np.ndarray, names: list[str]) -> dict[str, float]:
    return {n: float(f) for n, f in zip(names, (w <= 0).mean(axis=0))}


def sample_reference(prior: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Reference points for fill distance: ``Dir(1)`` (uniform on the simplex); ``prior`` sets the dimension."""
    return np.random.default_rng(seed).dirichlet(np.ones(len(prior)), size=n)


def _run_id(v: Any) -> str:
    # a run id names a folder under <out>/runs: keep it there
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", v):
        raise ConfigError(f"{v!r} is not a run id; use letters, digits, '-', '_' or '.'")
    return v


@config
class ManifestEntry:
    """One mixture of a synthesis folder's manifest.json."""

    run_id: Checked(_run_id, str)
    split: Choice("train", "heldout")
    file: Text  # relative to the folder
    hash: Text | None = None


def manifest_mixtures(folder: str | os.PathLike) -> list[tuple[str, Path, str]]:
    """``(run_id, path, split)`` for every mixture a synthesis folder holds, in manifest order if there is one."""
    folder = Path(folder)
    man = folder / MANIFEST
    if man.is_file():
        try:
            data = json.loads(man.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{man}: not valid JSON ({str(e).splitlines()[0][:80]}); rerun `regmix synthesize` "
                              "or delete it to use the folder's files") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{man}: expected a JSON object with a mixtures list")
        # The manifest also describes the synthesis (prior, bounds, stats): only the list of mixtures is read.
        entries = validate(list[ManifestEntry], data.get("mixtures"), str(man), prefix="mixtures")
        return [(e.run_id, folder / e.file, e.split) for e in entries]
    found = [(p.stem, p, "train") for p in sorted(folder.glob("*.json")) if p.name != MANIFEST]
    found += [(p.stem, p, "heldout") for p in sorted(folder.glob("heldout/*.json"))]
    found += [(p.parent.name, p, "train") for p in sorted(folder.glob(f"*/{SCHEDULE_FILE}")) if p.parent.name != "heldout"]
    found += [(p.parent.name, p, "heldout") for p in sorted(folder.glob(f"heldout/*/{SCHEDULE_FILE}"))]
    return found


"""`regmix reuse plan|runs|expand`: mixture reuse after a data change (docs/reuse.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from regmix_plugin.errors import ConfigError

STUDY_FILE = "study.yaml"
_TEMPLATE_KEYS = ("proxy_config", "command", "env", "runs", "backend", "local", "slurm", "repetition")


def register(sub) -> None:
    reuse = sub.add_parser("reuse", help="re-search only the domains a data change touched (Olmix mixture reuse)",
                           description="Keep the old mixture's ratios among untouched domains as one frozen "
                                       "domain and search the reduced simplex. See docs/reuse.md.")
    rsub = reuse.add_subparsers(dest="reuse_command", metavar="SUBCOMMAND")
    rsub.required = True

    p = rsub.add_parser("plan", help="write a reuse plan, the reduced base and (with --study) the reduced study")
    p.add_argument("old", help="the old regmix.json (the mixture chosen before the change)")
    p.add_argument("--base", help="regmix.json of the new domain set (e.g. the rebuilt corpus's natural.json)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=PREFIX",
                   help="a new domain and its training prefix (repeat for more prefixes or domains)")
    p.add_argument("--valid", action="append", default=[], metavar="NAME=PREFIX",
                   help="held-out validation prefix of an --add domain")
    p.add_argument("--update", action="append", default=[], metavar="NAME[=PREFIX]",
                   help="a domain whose data changed (new prefix, or the same prefix rewritten)")
    p.add_argument("--remove", action="append", default=[], metavar="NAME", help="a domain that is gone")
    p.add_argument("--old-runs", help="the old study's runs table (recorded as the source; rows reused where valid)")
    p.add_argument("--frozen-name", default="frozen", help="name of the frozen virtual domain (default: frozen)")
    p.add_argument("--study", help="old study YAML: its proxy config, command and backend go into the reduced study")
    p.add_argument("--n", type=int, default=16, help="reduced study: proxy mixtures to synthesize (default 16)")
    p.add_argument("--heldout", type=int, default=0, help="reduced study: held-out mixtures (default 0)")
    p.add_argument("--seed", type=int, default=0, help="reduced study: synthesis seed")
    p.add_argument("--out", required=True, help="plan folder (plan.json, full_base.json, base.json, study.yaml)")
    p.add_argument("--force", action="store_true", help="replace a different plan already in --out")
    p.set_defaults(func=_plan)

    p = rsub.add_parser("runs", help="the reduced runs table: the reuse sweep's runs plus valid old runs")
    p.add_argument("plan", help="plan.json (or its folder)")
    p.add_argument("--runs", required=True, help="runs table of the reuse sweep (`regmix collect`)")
    p.add_argument("--old-runs", help="old runs table (default: the one the plan records; 'none' to skip)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="how far (in weight) an old run's untouched domains may sit from the frozen ratios "
                        "(default 1e-3)")
    p.add_argument("--out", required=True, help="reduced runs table to write (.csv or .parquet)")
    p.set_defaults(func=_runs)

    p = rsub.add_parser("expand", help="expand a mixture over the reduced domains into a full regmix.json")
    p.add_argument("plan", help="plan.json (or its folder)")
    p.add_argument("mixture", help="the reduced regmix.json (from `regmix optimize --base-mixture PLAN/base.json`)")
    p.add_argument("--name", help="name of the written mixture (default: the reduced one's)")
    p.add_argument("--out", required=True, help="full regmix.json to write")
    p.set_defaults(func=_expand)


def _pairs(flag: str, items: list[str], need_value: bool) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name or (need_value and not value) or (sep and not value):
            form = "NAME=PREFIX" if need_value else "NAME or NAME=PREFIX"
            raise ConfigError(f"{flag} {item!r}: expected {form}, e.g. {flag} code=/data/code/train")
        if value:
            if value.endswith((".bin", ".idx")):
                raise ConfigError(f"{flag} {item!r}: give the prefix without .bin/.idx")
            out.setdefault(name, [])
            out[name].append(value)  # type: ignore[union-attr]
        else:
            out.setdefault(name, None)
    return out


def _plan(args: argparse.Namespace) -> int:
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.reuse.plan import make_plan, write_plan

    old = Mixture.load(args.old)
    base = Mixture.load(args.base) if args.base else None
    for flag in ("n", "heldout", "seed"):
        least = 1 if flag == "n" else 0
        if getattr(args, flag) < least:
            raise ConfigError(f"--{flag}: {getattr(args, flag)} is out of range; give a value >= {least}")
    plan, full, reduced = make_plan(
        old, args.old, base=base, add=_pairs("--add", args.add, True), valid=_pairs("--valid", args.valid, True),
        update=_pairs("--update", args.update, False), remove=args.remove, frozen_name=args.frozen_name,
        old_runs=args.old_runs)
    out = Path(args.out)
    path = write_plan(plan, full, reduced, out, force=args.force)
    ratios = ", ".join(f"{n} {r:.3f}" for n, r in plan.frozen.items())
    print(f"{path}: {plan.frozen_name} = {ratios}")
    print(f"  search over {', '.join(plan.reduced_names)} ({len(plan.reduced_names)} domains instead of "
          f"{len(full.names)})" + (f"; added {', '.join(plan.added)}" if plan.added else "")
          + (f"; updated {', '.join(plan.updated)}" if plan.updated else "")
          + (f"; removed {', '.join(plan.removed)}" if plan.removed else ""))
    for note in plan.notes:
        print(f"  note: {note}")
    if args.study:
        study = write_reduced_study(Path(args.study), out, args.n, args.heldout, args.seed)
        print(f"wrote {study}: run `regmix sweep {study}`")
    else:
        print(f"  a study over it: base_mixture: {out / 'base.json'} and reuse: {path}")
    return 0


def write_reduced_study(template: Path, folder: Path, n: int, heldout: int, seed: int) -> Path:
    """The reduced study: the template's proxy config, command and backend over the plan's reduced base."""
    import yaml

    from regmix_plugin.io import atomic_write_text
    from regmix_plugin.sweep.study import load_study

    load_study(template)  # one-line errors for a broken template before anything is written
    raw = yaml.safe_load(template.read_text(encoding="utf-8"))
    doc = {"name": f"{raw['name']}-reuse", "base_mixture": "base.json", "reuse": "plan.json"}
    for key in _TEMPLATE_KEYS:
        if key in raw:
            doc[key] = raw[key]
    if isinstance(doc.get("proxy_config"), str):
        doc["proxy_config"] = str((template.resolve().parent / doc["proxy_config"]).resolve())
    synth = dict(raw.get("synthesize") or {})
    # Settings that name old domains (or depend on their number) do not carry over to the reduced simplex.
    for key in ("prior_weights", "nonzero", "max_candidates"):
        synth.pop(key, None)
    synth.update(n=n, heldout=heldout, seed=seed)
    doc["synthesize"] = synth
    doc["out"] = "sweep"
    path = folder / STUDY_FILE
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    load_study(path)
    return path


def _runs(args: argparse.Namespace) -> int:
    from regmix_plugin.reuse.plan import file_digest
    from regmix_plugin.reuse_plan import DEFAULT_TOLERANCE, load_plan
    from regmix_plugin.reuse.runs import reduce_runs
    from regmix_plugin.table import read_runs, write_runs

    plan = load_plan(args.plan)
    tol = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not tol >= 0:
        raise ConfigError(f"--tolerance: {args.tolerance} must be >= 0")
    old_path = args.old_runs
    if old_path is None and plan.old_runs:
        old_path = plan.old_runs["path"]
        if Path(old_path).is_file() and file_digest(old_path) != plan.old_runs["sha256"]:
            print(f"regmix reuse runs: warning: {old_path} changed since the plan recorded it")
    old = read_runs(old_path) if old_path and old_path != "none" else None
    df, report = reduce_runs(plan, read_runs(args.runs), old, tol)
    write_runs(df, args.out)
    for line in report:
        print(line)
    print(f"wrote {args.out}: {len(df)} runs over {', '.join(plan.reduced_names)}")
    return 0


def _expand(args: argparse.Namespace) -> int:
    from regmix_plugin.mixture import Mixture, format_table
    from regmix_plugin.reuse_plan import load_plan

    plan = load_plan(args.plan)
    reduced = Mixture.load(args.mixture)
    full = plan.expand(reduced, name=args.name)
    full.provenance = {}
    full = full.with_provenance(
        tool="regmix reuse expand",
        reuse=plan.summary(),
        reduced_mixture={"path": str(Path(args.mixture).resolve()), "name": reduced.name,
                         "hash": reduced.content_hash(), "weights": dict(zip(reduced.names, reduced.weights)),
                         "provenance": reduced.provenance},
    )
    full.save(args.out)
    print(format_table(full))
    print(f"wrote {args.out}")
    return 0

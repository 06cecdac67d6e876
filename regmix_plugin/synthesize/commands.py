"""`regmix synthesize`: a thin adapter from argparse to the sampler (synthesize/sampler.py)."""

from __future__ import annotations

import argparse

from regmix_plugin.config_schema import read_yaml_file
from regmix_plugin.errors import ConfigError
from regmix_plugin.mixture import Mixture

# Every scalar setting of the sampler gets a flag of its own, read from its config class; these two take a
# mapping or a list (`--nonzero` is parsed below, prior_weights only in a file).
_NO_FLAG = {"prior_weights", "nonzero", "phases"}


def _synth_flags() -> list[str]:
    from dataclasses import fields

    from regmix_plugin.synthesize.config import SynthConfig

    return [f.name for f in fields(SynthConfig) if f.name not in _NO_FLAG]


def _scalar(text: str):
    """A flag's value as the YAML file would hold it (int, float or text); SynthConfig checks it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() in ("null", "none") else text


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="sample proxy mixtures (RegMix's sampler) into n0001.json ...",
                       description="Sample proxy mixtures over a base mixture's domains. Settings come from "
                                   "--config (YAML), then from the flags. See docs/sweeps.md.")
    p.add_argument("base", help="base mixture (e.g. a corpus's natural.json): the domains, prefixes and tokens")
    p.add_argument("--out", required=True, help="folder for n*.json, heldout/h*.json, weights.csv, manifest.json")
    p.add_argument("--config", help="YAML mapping of sampler settings (the `synthesize:` block of a study)")
    p.add_argument("--overwrite", action="store_true", help="replace mixtures already in --out")
    for name in _synth_flags():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=_scalar, default=None,
                       help=f"synthesize.{name} (see docs/sweeps.md)")
    p.add_argument("--nonzero", help="comma-separated domains (or 'all') that always get weight >= minimum")
    p.add_argument("--no-max-usage", action="store_true", help="disable the max_usage rejection bound")
    p.add_argument("--phases", help="multi-phase schedules: where phases 1.. begin as fractions of training, "
                                    "comma-separated and increasing in (0, 1), e.g. 0.8 (docs/phases.md)")
    r = p.add_argument_group("next round (CLIMB-style bootstrapping)")
    r.add_argument("--around", metavar="MODEL_DIR", help="draw --n mixtures where this fitted model predicts the best "
                   "target (in its direction), spread over the top of a candidate pool, plus where it is least "
                   "certain when the predictor can say (GP); the sampler's caps and floors apply; no held-out set")
    r.add_argument("--pool", type=int, default=20_000, help="--around: candidate mixtures predicted (default 20000)")
    r.add_argument("--explore", type=float, default=0.25,
                   help="--around: share of the round drawn where the model is least certain (default 0.25; GP only)")
    r.add_argument("--round", type=int, default=2, help="--around: round number; files are r<ROUND>_n0001.json ...")
    p.set_defaults(func=_synthesize)


def _phase_boundary(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--phases: {text!r} is not a number; give fractions of training such as 0.8 or 0.5,0.8") from None


def synth_config_from_args(args: argparse.Namespace):
    from regmix_plugin.synthesize.config import SynthConfig

    data = {}
    if args.config:
        data = read_yaml_file(args.config, f"--config {args.config}") or {}
        if isinstance(data, dict) and isinstance(data.get("synthesize"), dict):
            data = data["synthesize"]  # a whole study file works too
    if not isinstance(data, dict):
        raise ConfigError(f"--config {args.config}: expected a mapping of sampler settings")
    for name in _synth_flags():
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.nonzero:
        data["nonzero"] = "all" if args.nonzero == "all" else [x for x in args.nonzero.split(",") if x]
    if args.phases:
        data["phases"] = [_phase_boundary(x) for x in args.phases.split(",")]
    if args.no_max_usage:
        data["max_usage"] = None
    return SynthConfig.from_dict(data)


def _synthesize(args: argparse.Namespace) -> int:
    from regmix_plugin.synthesize.sampler import write_synthesis

    cfg = synth_config_from_args(args)
    if args.around:
        from regmix_plugin.fit.model import FittedModel
        from regmix_plugin.synthesize.around import write_round

        model = FittedModel.load(args.around)
        if cfg.phases or model.phases:
            raise ConfigError("--around: rounds of schedules are not supported yet; draw schedules without --around")
        man = write_round(cfg, Mixture.load(args.base), args.out, model, args.around, cfg.n, args.pool, args.explore,
                          args.round, overwrite=args.overwrite)
        print(f"{args.out}: {len(man['mixtures'])} mixtures of round {args.round} around {args.around} "
              f"({model.target.direction} {model.target.expr}; {man['around']['pool']} candidates predicted)")
        return 0
    man = write_synthesis(cfg, Mixture.load(args.base), args.out, overwrite=args.overwrite)
    n_train = sum(1 for e in man["mixtures"] if e["split"] == "train")
    s = man["stats"]
    kind = f"{len(cfg.phases) + 1}-phase schedules" if cfg.phases else "mixtures"
    print(f"{args.out}: {n_train} {kind} + {len(man['mixtures']) - n_train} held out over "
          f"{len(man['domains'])} domains ({s['candidates']} draws, {s['rejected']} rejected by caps, "
          f"{s['duplicates']} duplicates)")
    return 0

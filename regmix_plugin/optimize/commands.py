"""`regmix optimize`: a thin adapter from argparse to regmix_plugin.optimize.run."""

from __future__ import annotations

# Heavy modules (scipy, pandas, lightgbm) are imported inside the command, not here: every `regmix`
# invocation builds the whole parser, and `regmix train` must not pay for the fitter's imports.
from regmix_plugin.optimize.search_config import MODES


def register(sub) -> None:
    p = sub.add_parser("optimize", help="choose the mixture with the best predicted target; write regmix.json")
    p.add_argument("--model", required=True, help="MODEL_DIR written by `regmix fit`")
    p.add_argument("--constraints", help="YAML of min/max/fixed weights, token caps, prior pull")
    p.add_argument("--base-mixture", help="regmix.json (e.g. the corpus's natural.json): prior, prefixes and token counts")
    p.add_argument("--study", help="study YAML: its base_mixture gives token counts (after --constraints tokens and "
                                   "--base-mixture) and, without --base-mixture, the prior and prefixes")
    p.add_argument("--coverage", type=float, default=0.9,
                   help="coverage of the conformal interval around each predicted target (default 0.9)")
    p.add_argument("--mode", default="auto", choices=MODES, help="sample (RegMix top-k), exact (smooth predictors), auto")
    p.add_argument("--samples", type=int, default=100_000, help="Dirichlet pool size (default 100000)")
    p.add_argument("--top-k", type=int, default=128, help="mixtures averaged in sample mode (default 128)")
    p.add_argument("--starts", type=int, default=1, help="exact mode: local searches (best pool sample, prior, next best...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="regmix-opt", help="name of the written mixture")
    p.add_argument("--report", help="also write a markdown/HTML report with figures into this folder")
    p.add_argument("--out", required=True, help="regmix.json to write; for a model fitted on schedules, the schedule "
                                                "YAML (phase<k>.json and <stem>.png are written beside it)")
    p.set_defaults(func=cmd_optimize)


def cmd_optimize(args) -> int:
    from regmix_plugin.fit.model import FittedModel
    from regmix_plugin.mixture import Mixture
    from regmix_plugin.optimize.constraints import Constraints
    from regmix_plugin.optimize.run import optimize
    from regmix_plugin.optimize.search_config import SearchConfig
    from regmix_plugin.optimize.uncertainty import interval_text

    model = FittedModel.load(args.model)
    cons = Constraints.load(args.constraints)
    cfg = SearchConfig(mode=args.mode, n_samples=args.samples, top_k=args.top_k, n_starts=args.starts, seed=args.seed)
    base = Mixture.load(args.base_mixture) if args.base_mixture else None
    if model.phases:
        return _optimize_schedule(args, model, cons, cfg, base)
    out = optimize(model, cons, cfg, base, name=args.name, study=args.study, coverage=args.coverage)
    out.mixture.save(args.out)
    prov = out.mixture.provenance
    print(f"predictor {model.chosen}; {out.result.label} search in {out.seconds:.2f}s")
    print(f"direction: {model.target.describe()}")
    print(f"predicted {model.target.expr}: {out.result.predicted:.4f} {interval_text(prov['predicted_target_uncertainty'])}")
    for k, v in out.baselines.items():
        print(f"  baseline {k}: predicted {v['predicted']:.4f}")
    if out.result.active:
        print("active constraints: " + ", ".join(f"{d} {why}" for d, why in out.result.active.items()))
    if "prefixes_note" in prov:
        print("note: " + prov["prefixes_note"])
    print(f"wrote {args.out}")
    if args.report:
        from regmix_plugin.optimize.report import write_fit_report

        paths = write_fit_report(model, out, args.report)
        print(f"wrote report {paths[0]}")
    return 0


def _optimize_schedule(args, model, cons, cfg, base) -> int:
    from regmix_plugin.errors import ConfigError
    from regmix_plugin.optimize.phases import optimize_schedule, write_schedule

    if args.report:
        raise ConfigError("--report: not written for schedules yet; the figure <out stem>.png shows both phases")
    if not str(args.out).endswith((".yaml", ".yml")):
        raise ConfigError(f"--out {args.out}: the model was fitted on schedules; name the schedule YAML to write "
                          "(e.g. opt/schedule.yaml)")
    name = "regmix-schedule" if args.name == "regmix-opt" else args.name
    out = optimize_schedule(model, cons, cfg, base, name=name, study=args.study, coverage=args.coverage)
    paths = write_schedule(out, args.out)
    g = out.gain
    iv = g.get("interval") or {}
    span = (f" ({iv['coverage']:.0%} interval {iv['lower']:.4f} to {iv['upper']:.4f})"
            if iv.get("lower") is not None else "")
    print(f"predictor {model.chosen}; {out.method} search of {len(out.phases)}-phase schedules in {out.seconds:.2f}s")
    print(f"predicted {model.target.expr}: schedule {out.predicted:.4f}, best single mixture {out.predicted_single:.4f}; "
          f"predicted gain {g['predicted']:.4f}{span}")
    for k, m in enumerate(out.phases):
        top = sorted(zip(m.names, m.weights), key=lambda t: -t[1])[:4]
        print(f"  phase {k}: " + ", ".join(f"{n} {w:.3f}" for n, w in top))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

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
    p.add_argument("--out", required=True, help="regmix.json to write")
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

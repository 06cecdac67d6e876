"""`regmix demo`: the whole RegMix loop on CPU on real text (what `make demo` runs)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from regmix_plugin.demo.config import DemoConfig


def register(sub) -> None:
    d = DemoConfig.__dataclass_fields__
    p = sub.add_parser("demo", help="run the whole RegMix loop on CPU on a real multi-domain corpus")
    p.add_argument("--out", default="demo_out", help="work folder; a rerun reuses finished work (default: demo_out)")
    p.add_argument("--proxies", type=int, default=d["proxies"].default, help="proxy mixtures to fit on")
    p.add_argument("--heldout", type=int, default=d["heldout"].default, help="held-out proxy mixtures")
    p.add_argument("--workers", type=int, default=d["workers"].default, help="runs at once")
    p.add_argument("--seed", type=int, default=d["seed"].default, help="synthesis seed")
    p.add_argument("--target-seeds", type=_seeds, default=d["target_seeds"].default_factory(),
                   help="comma-separated seeds of the target runs (default: 1,2,3,4,5)")
    p.add_argument("--target", default=d["target"].default,
                   help="what to minimise: eval (default; the mean loss on evaluation sets that are not training "
                        "domains) or train-mean (the mean of the training domains' own validation losses)")
    p.add_argument("--predictor", default=d["predictor"].default, help="predictor name, or auto (cross-validated)")
    p.add_argument("--proxy-config", default=str(d["proxy_config"].default), help="proxy model/run YAML")
    p.add_argument("--target-config", default=str(d["target_config"].default), help="target model/run YAML")
    p.add_argument("--domains", help="comma-separated subset of the demo domains (default: all found)")
    p.set_defaults(func=_demo)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,2") from None


def _demo(args: argparse.Namespace) -> int:
    from regmix_plugin.demo.run import Demo

    cfg = DemoConfig(
        out=Path(args.out),
        proxies=args.proxies,
        heldout=args.heldout,
        workers=args.workers,
        seed=args.seed,
        target_seeds=args.target_seeds,
        predictor=args.predictor,
        proxy_config=Path(args.proxy_config),
        target_config=Path(args.target_config),
        domains=args.domains.split(",") if args.domains else None,
        target=args.target,
    )
    import json

    from regmix_plugin.demo.report import megatron_launch_line

    demo = Demo(cfg, log=functools.partial(print, flush=True))
    report = demo.run()
    print("\n" + (report.read_text().split("\n\n")[1]))  # the verdict paragraph
    facts = json.loads((report.parent / "demo.json").read_text())
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"held-out proxy mixtures: predictor Spearman rho {fmt(facts.get('heldout_spearman'))}; proxy vs target "
          f"model on them: rho {fmt(facts.get('rank_check_spearman'))}; on the 4 evaluated mixtures: "
          f"rho {fmt(facts.get('proxy_vs_target_spearman'))}")
    print(f"\nThe chosen mixture on a GPU cluster (Megatron-LM, TP=2 x PP=2):\n{megatron_launch_line(demo)}")
    print(f"\nreport: {report} (and .html beside it)")
    return 0

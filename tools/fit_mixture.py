#!/usr/bin/env python
"""One command from proxy runs to the mixture for the big run: fit (CV-chosen predictor), optimise, report.

    .venv/bin/python tools/fit_mixture.py --runs runs.csv --target valid/web/loss --out study/fit
    .venv/bin/python tools/fit_mixture.py --mixtures M.csv --losses L.csv --target valid/pile_cc/loss \\
        [--predictor auto] [--constraints C.yaml] [--base-mixture natural.json] [--study STUDY.yaml] \\
        [--coverage 0.9] --out DIR

Writes DIR/model/ (the fitted model), DIR/regmix.json and DIR/report/report.{md,html} with figures.
"""

from __future__ import annotations

import argparse
import sys

from regmix_plugin.cli import main as regmix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", action="append", help="runs table; repeat for the union of search rounds")
    ap.add_argument("--mixtures")
    ap.add_argument("--losses")
    ap.add_argument("--target", required=True)
    ap.add_argument("--predictor", default="auto")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--maximize", action="store_true", help="higher target is better (passed to regmix fit)")
    g.add_argument("--minimize", action="store_true", help="lower target is better (passed to regmix fit)")
    ap.add_argument("--constraints")
    ap.add_argument("--base-mixture")
    ap.add_argument("--study", help="study YAML whose base mixture gives token counts (and prior, prefixes)")
    ap.add_argument("--coverage", help="coverage of the predicted target's conformal interval (default 0.9)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    src = [x for r in a.runs for x in ("--runs", r)] if a.runs else ["--mixtures", str(a.mixtures), "--losses", str(a.losses)]
    direction = ["--maximize"] if a.maximize else ["--minimize"] if a.minimize else []
    rc = regmix(["fit", *src, "--target", a.target, *direction, "--predictor", a.predictor, "--out", f"{a.out}/model"])
    if rc:
        return rc
    extra = [x for flag in ("constraints", "base_mixture", "study", "coverage") if getattr(a, flag)
             for x in ("--" + flag.replace("_", "-"), str(getattr(a, flag)))]
    return regmix(["optimize", "--model", f"{a.out}/model", *extra, "--out", f"{a.out}/regmix.json", "--report", f"{a.out}/report"])


if __name__ == "__main__":
    sys.exit(main())

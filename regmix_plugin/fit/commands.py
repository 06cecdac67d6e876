"""`regmix fit` and `regmix predict`: thin adapters from argparse to regmix_plugin.fit.model."""

from __future__ import annotations

import json

from regmix_plugin.errors import RegmixError

# numpy/pandas/scipy/lightgbm are imported inside the commands: every `regmix` invocation builds the whole
# parser, and `regmix train` (run hundreds of times by a sweep) must not pay for the fitter's imports.


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit a predictor of a target metric from proxy runs; print its cross-validation table")
    src = p.add_argument_group("runs (one of)")
    src.add_argument("--runs", action="append", help="runs table from `regmix collect` (CSV or Parquet); repeat it "
                     "to fit the union of search rounds (a round column is added; clashing run ids get r<K>_)")
    src.add_argument("--mixtures", help="RegMix mixture CSV (index,train_the_pile_<domain>...); needs --losses")
    src.add_argument("--losses", help="RegMix loss CSV (index,metric/the_pile_<domain>_val_loss...)")
    p.add_argument("--target", required=True, help="metric column, 'a*COL + b*COL', or 'mean(valid/*/loss)'")
    add_direction_flags(p)
    p.add_argument("--predictor", default="auto", help="predictor name (see docs/predictors.md); default: auto (chosen by CV)")
    p.add_argument("--params", default="{}", help="JSON object of predictor hyperparameters, e.g. '{\"n_estimators\": 200}'")
    p.add_argument("--compare", default="", help="comma-separated predictors to cross-validate beside the chosen one")
    p.add_argument("--folds", type=int, default=5, help="K of the K-fold cross-validation (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the predictor and the folds")
    p.add_argument("--include-heldout", action="store_true",
                   help="also fit on runs marked split = heldout (by default they are kept out and scored)")
    p.add_argument("--no-learning-curve", action="store_true",
                   help="skip the CV at 50/75 %% of the runs and the projection to twice the runs (faster)")
    p.add_argument("--out", required=True, help="model folder to write (MODEL_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr (it is shown only on a terminal)")
    p.set_defaults(func=cmd_fit)

    q = sub.add_parser("predict", help="predict the target for mixtures with a fitted model")
    q.add_argument("--model", required=True, help="MODEL_DIR written by `regmix fit`")
    q.add_argument("--mixtures", required=True, help="CSV of mixtures (RegMix's format, a runs table, or domain columns)")
    q.add_argument("--out", required=True, help="CSV to write: index,prediction in the input's row order")
    q.set_defaults(func=cmd_predict)


def add_direction_flags(p) -> None:
    """``--maximize``/``--minimize`` (one of them; default from the target's metric names, printed)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--maximize", dest="direction", action="store_const", const="maximize",
                   help="higher target is better (accuracies); default: from the metric name (acc, f1, valid_avg... "
                        "maximize; loss, bpb, perplexity... minimize; unknown: minimize), printed")
    g.add_argument("--minimize", dest="direction", action="store_const", const="minimize",
                   help="lower target is better (losses)")
    p.set_defaults(direction=None)


def parse_params(text: str) -> dict:
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise RegmixError(f"--params: not valid JSON ({e.msg}); give an object such as '{{\"n_estimators\": 200}}'") from None
    if not isinstance(params, dict):
        raise RegmixError("--params: expected a JSON object of hyperparameter names to values")
    return params


def cmd_fit(args) -> int:
    from regmix_plugin.fit.model import FitConfig, fit_model, load_runs_table
    from regmix_plugin.fit.progress import ConsoleListener

    cfg = FitConfig(
        predictor=args.predictor,
        params=parse_params(args.params),
        compare=tuple(c for c in args.compare.split(",") if c),
        folds=args.folds,
        seed=args.seed,
        direction=args.direction,
        include_heldout=args.include_heldout,
        learning_curve=not args.no_learning_curve,
    )
    df = load_runs_table(args.runs, args.mixtures, args.losses)
    # The CV table is printed row by row as candidates finish, with a progress bar on stderr meanwhile.
    model = fit_model(df, args.target, cfg, listener=ConsoleListener(bar=False if args.quiet else None))
    model.save(args.out)
    if model.learning_curve:
        print(model.curve_text())
    if model.heldout:
        print(model.heldout_text())
    print(f"chosen: {model.chosen} ({model.reason})")
    print(f"wrote {args.out}")
    return 0


def cmd_predict(args) -> int:
    import numpy as np
    import pandas as pd

    from regmix_plugin.fit.model import FittedModel, read_mixture_rows
    from regmix_plugin.io import atomic_write_text

    model = FittedModel.load(args.model)
    ids, X = read_mixture_rows(args.mixtures, model.domains)
    pred = model.predictor.predict(X)
    out = pd.DataFrame({"index": ids, "prediction": np.asarray(pred)})
    atomic_write_text(args.out, out.to_csv(index=False))
    print(f"wrote {len(out)} predictions of {model.target.expr} to {args.out}; direction {model.target.describe()}")
    return 0

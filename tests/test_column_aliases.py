"""A column or domain may be named as its source file spells it (RegMix's `metric/the_pile_pile_cc_val_loss`),
wherever a target, metric or domain is named: `regmix fit --target`, `mean(GLOB)`, constraints, rank-check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.scale.laws import rank_invariance
from regmix_plugin.fit.targets import parse_target
from regmix_plugin.optimize.constraints import Constraints
from regmix_plugin.table import from_regmix_csv, normalised_name, resolve_column, resolve_domain


def test_source_names_map_to_runs_table_names_by_the_importers_rules():
    assert normalised_name("metric/the_pile_pile_cc_val_loss") == "valid/pile_cc/loss"
    assert normalised_name("train_the_pile_github") == "weight/github"
    assert normalised_name("metric/the_pile_*_val_loss") == "valid/*/loss"  # globs too
    assert normalised_name("arc_easy:rc::olmes") == "arc_easy:rc::olmes"  # anything else is itself
    cols = ["valid/pile_cc/loss", "train_tokens"]
    assert resolve_column("metric/the_pile_pile_cc_val_loss", cols) == "valid/pile_cc/loss"
    assert resolve_column("train_tokens", cols) == "train_tokens"  # a column that exists is never renamed
    assert resolve_column("metric/the_pile_nope_val_loss", cols) is None
    assert resolve_domain("train_the_pile_pile_cc", ["pile_cc"]) == "pile_cc"
    assert resolve_domain("weight/pile_cc", ["pile_cc"]) == "pile_cc"
    assert resolve_domain("nope", ["pile_cc"]) is None


def test_targets_accept_the_released_files_column_names(regmix_data):
    df = from_regmix_csv(regmix_data / "test_mixture_1m.csv", regmix_data / "test_pile_loss_1m.csv")
    assert parse_target("metric/the_pile_pile_cc_val_loss", df).columns == ["valid/pile_cc/loss"]
    assert parse_target("0.5*metric/the_pile_github_val_loss + 0.5*valid/arxiv/loss", df).columns == [
        "valid/github/loss", "valid/arxiv/loss"]
    assert len(parse_target("mean(metric/the_pile_*_val_loss)", df).columns) == 13
    with pytest.raises(RegmixError, match="'metric/the_pile_nope_val_loss' is not in the runs table"):
        parse_target("metric/the_pile_nope_val_loss", df)


def test_cli_fit_with_the_source_column_name_and_constraints_with_source_domain_names(regmix_data, tmp_path, capsys):
    d = regmix_data
    model = tmp_path / "model"
    assert main(["fit", "--mixtures", str(d / "test_mixture_1m.csv"), "--losses", str(d / "test_pile_loss_1m.csv"),
                 "--target", "metric/the_pile_pile_cc_val_loss", "--predictor", "eff-law", "--folds", "3",
                 "--out", str(model)]) == 0
    assert json.loads((model / "model.json").read_text())["target"]["terms"] == [[1.0, "valid/pile_cc/loss"]]
    (tmp_path / "c.yaml").write_text("fixed: {train_the_pile_github: 0.05}\nmax: {weight/pile_cc: 0.3}\n")
    assert main(["optimize", "--model", str(model), "--constraints", str(tmp_path / "c.yaml"),
                 "--out", str(tmp_path / "regmix.json")]) == 0
    w = {x["name"]: x["weight"] for x in json.loads((tmp_path / "regmix.json").read_text())["domains"]}
    assert w["github"] == pytest.approx(0.05, abs=1e-9) and w["pile_cc"] <= 0.3 + 1e-9
    capsys.readouterr()
    # A name that matches nothing either way: one line, exit 2.
    assert main(["fit", "--mixtures", str(d / "test_mixture_1m.csv"), "--losses", str(d / "test_pile_loss_1m.csv"),
                 "--target", "metric/the_pile_nope_val_loss", "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--target" in err


def test_constraints_name_unknown_domains_in_one_line():
    with pytest.raises(RegmixError, match=r"fixed\.train_the_pile_nope: no such domain"):
        Constraints(fixed={"train_the_pile_nope": 0.1}).named_for(["pile_cc", "github"])
    c = Constraints(min={"train_the_pile_pile_cc": 0.1}, max_epochs={"weight/github": 2}).named_for(["pile_cc", "github"])
    assert c.min == {"pile_cc": 0.1} and c.max_epochs == {"github": 2}


def test_rank_check_accepts_the_source_metric_name(regmix_data):
    d = regmix_data
    small = from_regmix_csv(d / "test_mixture_1m.csv", d / "test_pile_loss_1m.csv")
    large = from_regmix_csv(d / "test_mixture_60m.csv", d / "test_pile_loss_60m.csv")
    check = rank_invariance(small, large, metrics=["metric/the_pile_pile_cc_val_loss"])
    assert check.table["metric"].tolist() == ["valid/pile_cc/loss"]
    assert np.isfinite(check.table["rho"].iloc[0])

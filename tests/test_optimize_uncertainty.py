"""`regmix optimize`: token caps from a study YAML, and the conformal interval around predicted targets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fit_helpers import DOMAINS, synthetic_runs, synthetic_xy

from regmix_plugin.cli import main
from regmix_plugin.errors import RegmixError
from regmix_plugin.fit.model import FitConfig, fit_model
from regmix_plugin.mixture import Mixture
from regmix_plugin.optimize.uncertainty import ConformalInterval, model_interval
from regmix_plugin.table import write_runs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    write_runs(synthetic_runs(40), d / "runs.csv")
    assert main(["fit", "--runs", str(d / "runs.csv"), "--target", "valid/web/loss", "--predictor", "mixing-law",
                 "--params", '{"n_starts": 2}', "--folds", "4", "--out", str(d / "model")]) == 0
    return d / "model"


def _study(tmp_path, tokens: dict | None) -> str:
    """A study YAML whose base mixture (in a sub-folder, referenced relatively) has the given token counts."""
    (tmp_path / "corpus").mkdir(exist_ok=True)
    Mixture.from_dict({"version": 1, "domains": [
        {"name": d, "weight": 0.25, "prefixes": [f"{d}/train"], **({"tokens": tokens[d]} if tokens else {})}
        for d in DOMAINS]}).save(tmp_path / "corpus" / "natural.json")
    (tmp_path / "study.yaml").write_text("name: s\nbase_mixture: corpus/natural.json\nproxy_config: proxy.yaml\nsynthesize: {n: 4}\n")
    return str(tmp_path / "study.yaml")


def _optimize(model_dir, tmp_path, *extra) -> tuple[int, dict]:
    rc = main(["optimize", "--model", str(model_dir), "--samples", "1000", *extra, "--out", str(tmp_path / "r.json")])
    doc = json.loads((tmp_path / "r.json").read_text()) if rc == 0 else {}
    return rc, doc


def test_study_base_mixture_gives_token_caps_prior_and_prefixes(model_dir, tmp_path):
    study = _study(tmp_path, {"web": 1000, "code": 4000, "books": 4000, "math": 4000})
    (tmp_path / "c.yaml").write_text("target_tokens: 10000\nmax_epochs: 2\n")  # web capped at 0.2
    rc, doc = _optimize(model_dir, tmp_path, "--constraints", str(tmp_path / "c.yaml"), "--study", study)
    assert rc == 0
    w = {d["name"]: d["weight"] for d in doc["domains"]}
    assert w["web"] == pytest.approx(0.2, abs=1e-6)  # the law wants web most; the cap holds it
    prov = doc["provenance"]
    assert prov["active_constraints"]["web"] == "at upper bound (token cap)"
    assert set(prov["token_sources"].values()) == {f"--study {study} (base mixture)"}
    assert doc["domains"][0]["prefixes"] == ["corpus/web/train"] or doc["domains"][0]["prefixes"][0].endswith("web/train")
    assert "study" in prov["prior_source"] and "prefixes_note" not in prov


def test_token_precedence_constraints_then_base_mixture_then_study(model_dir, tmp_path):
    study = _study(tmp_path, {d: 100 for d in DOMAINS})  # caps 0.02 each: infeasible if the study won
    Mixture.from_dict({"version": 1, "domains": [
        {"name": d, "weight": 0.25, "prefixes": [f"b/{d}"], "tokens": 4000} for d in DOMAINS if d != "math"]
        + [{"name": "math", "weight": 0.25, "prefixes": ["b/math"]}]}).save(tmp_path / "base.json")
    (tmp_path / "c.yaml").write_text("target_tokens: 10000\nmax_epochs: 2\ntokens: {web: 1000}\n")
    rc, doc = _optimize(model_dir, tmp_path, "--constraints", str(tmp_path / "c.yaml"), "--study", study,
                        "--base-mixture", str(tmp_path / "base.json"))
    assert rc == 0
    src = doc["provenance"]["token_sources"]
    assert src == {"web": "--constraints tokens", "code": "--base-mixture", "books": "--base-mixture",
                   "math": f"--study {study} (base mixture)"}
    w = {d["name"]: d["weight"] for d in doc["domains"]}
    assert w["web"] <= 0.2 + 1e-6 and w["math"] <= 0.02 + 1e-6 and w["code"] <= 0.8 + 1e-6
    assert doc["domains"][0]["prefixes"] == ["b/web"]  # --base-mixture, not the study, is the template


def test_study_without_token_information_is_one_line(model_dir, tmp_path, capsys):
    study = _study(tmp_path, None)  # no `tokens` and no .idx files next to the prefixes
    (tmp_path / "c.yaml").write_text("target_tokens: 10000\n")
    rc, _ = _optimize(model_dir, tmp_path, "--constraints", str(tmp_path / "c.yaml"), "--study", study)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "tokens.web: target_tokens needs the available tokens" in err and f"--study {study}" in err
    assert not (tmp_path / "r.json").exists()


def test_missing_study_file_is_one_line(model_dir, tmp_path, capsys):
    rc, _ = _optimize(model_dir, tmp_path, "--study", str(tmp_path / "nope.yaml"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "study file not found" in err and len(err.splitlines()) == 1


def test_conformal_quantile_is_the_finite_sample_rank():
    r = np.array([0.5, -0.1, 0.2, -0.9, 0.3, 0.05, -0.4, 0.7, 0.6])  # |r| sorted: .05 .1 .2 .3 .4 .5 .6 .7 .9
    assert ConformalInterval.from_residuals(r, 0.9).half_width == pytest.approx(0.9)  # ceil(10 * 0.9) = 9th
    assert ConformalInterval.from_residuals(r, 0.5).half_width == pytest.approx(0.4)  # ceil(10 * 0.5) = 5th
    too_few = ConformalInterval.from_residuals(r[:5], 0.9)  # ceil(6 * 0.9) = 6 > 5 runs
    assert math.isinf(too_few.half_width) and too_few.describe(1.0)["lower"] is None
    with pytest.raises(RegmixError, match="--coverage: 1.5 must be a number strictly between 0 and 1"):
        ConformalInterval.from_residuals(r, 1.5)


def test_interval_covers_fresh_runs_at_about_the_stated_rate():
    # Fit on 60 synthetic runs; 400 fresh mixtures from the same distribution, with the same noise.
    model = fit_model(synthetic_runs(61, seed=1), "valid/web/loss", FitConfig(predictor="mixing-law",
                      params={"n_starts": 2}, folds=5))
    X, y = synthetic_xy(400, seed=7)
    covered = {}
    for c in (0.5, 0.9):
        lo, hi = model_interval(model, c).bounds(model.predictor.predict(X))
        covered[c] = float(np.mean((y >= lo) & (y <= hi)))
    assert 0.4 <= covered[0.5] <= 0.7 and 0.83 <= covered[0.9] <= 0.99
    assert covered[0.9] > covered[0.5]


def test_regmix_json_and_report_carry_the_interval(model_dir, tmp_path, capsys):
    rc, doc = _optimize(model_dir, tmp_path, "--coverage", "0.8", "--report", str(tmp_path / "rep"))
    assert rc == 0
    unc = doc["provenance"]["predicted_target_uncertainty"]
    iv, pred = unc["interval"], doc["provenance"]["predicted_target"]
    assert iv["coverage"] == 0.8 and iv["calibration_runs"] == 39 and iv["lower"] < pred < iv["upper"]
    assert iv["upper"] - pred == pytest.approx(pred - iv["lower"])
    for b in doc["provenance"]["baselines"].values():
        assert b["interval"][1] - b["interval"][0] == pytest.approx(2 * iv["half_width"])
    assert "80% interval" in capsys.readouterr().out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "80% interval" in md and "| mixture | predicted | interval | actual |" in md
    assert main(["optimize", "--model", str(model_dir), "--coverage", "0", "--out", str(tmp_path / "x.json")]) == 2

"""The predictor interface: one FitData per fit, declared needs, an open registry, instances in composites."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fit_helpers import FAST_PARAMS, synthetic_runs, synthetic_xy

from regmix_plugin.fit.base import FitData, Predictor, State
from regmix_plugin.fit.linear import LinearPredictor
from regmix_plugin.fit.mixing_law import MixingLawPredictor
from regmix_plugin.fit.model import FitConfig, fit_model
from regmix_plugin.fit.registry import _REGISTRY, available, get_predictor, load_predictor, register

X, Y = synthetic_xy(40)
X_NEW, _ = synthetic_xy(15, seed=1)


@pytest.fixture
def probe_registered():
    """A predictor defined here, outside fit/, that needs the auxiliary metrics: registered by its decorator
    alone, and removed again so other tests see the built-in list."""

    @register
    class AuxProbe(Predictor):
        """Predicts the linear law of the target; records what the fit gave it."""

        name = "aux-probe"
        smooth = True
        needs = frozenset({"auxiliary"})

        def __init__(self, random_state: int = 0) -> None:
            self.random_state = random_state

        def _fit_data(self, data: FitData, listener=None) -> None:
            self.auxiliary_shape_ = None if data.auxiliary is None else list(data.auxiliary.shape)
            self.auxiliary_names_ = list(data.auxiliary_names)
            self.model_ = LinearPredictor().fit(data.X, data.y)

        def uses_auxiliary(self) -> bool:
            return True

        def _predict(self, X):
            return self.model_.predict(X)

        def _get_state(self) -> State:
            return State(meta={"names": self.auxiliary_names_}, children={"law": self.model_})

        def _set_state(self, state: State) -> None:
            self.auxiliary_names_ = state.meta["names"]
            self.model_ = state.children["law"]

    yield AuxProbe
    _REGISTRY.pop("aux-probe")


def test_a_predictor_registered_elsewhere_gets_what_it_declares(probe_registered, tmp_path):
    assert available()[-1] == "aux-probe"  # after the built-in ones, whatever imported first
    df = synthetic_runs(40)
    fitted = fit_model(df, "valid/web/loss", FitConfig(predictor="aux-probe", folds=3))
    # fit_model gave it the other per-domain loss because the class asked, not because of its name.
    assert fitted.predictor.auxiliary_shape_ == [39, 1] and fitted.predictor.auxiliary_names_ == ["valid/code/loss"]
    assert fitted.auxiliary == ["valid/code/loss"]
    fitted.predictor.save(tmp_path / "m")
    assert isinstance(load_predictor(tmp_path / "m"), probe_registered)
    # A predictor that does not declare it gets the same FitData but ignores it: linear's fit is unchanged.
    plain = fit_model(df, "valid/web/loss", FitConfig(predictor="linear", folds=3))
    assert plain.auxiliary == []


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(Exception, match="'linear' is taken by LinearPredictor"):
        register(type("OtherLinear", (LinearPredictor,), {"name": "linear"}))


def test_fitdata_and_arrays_fit_the_same_model():
    a = get_predictor("mixing-law", **FAST_PARAMS["mixing-law"]).fit(X, Y).predict(X_NEW)
    b = get_predictor("mixing-law", **FAST_PARAMS["mixing-law"]).fit(FitData(X, Y)).predict(X_NEW)
    np.testing.assert_array_equal(a, b)
    # per-column and joint-law: the matrix form and the FitData form are one fit.
    Yc = np.c_[Y, Y * 1.5 + 0.1]
    pc = get_predictor("per-column", column_weights=[0.5, 0.5], base_params={"n_starts": 2})
    pd_ = get_predictor("per-column", base_params={"n_starts": 2})
    np.testing.assert_array_equal(
        pc.fit(X, Yc).predict(X_NEW),
        pd_.fit(FitData(X, Yc @ [0.5, 0.5], columns=Yc, column_weights=np.array([0.5, 0.5]))).predict(X_NEW))
    j1 = get_predictor("joint-law", **FAST_PARAMS["joint-law"]).fit(X, Yc).predict(X_NEW)
    j2 = get_predictor("joint-law", **FAST_PARAMS["joint-law"]).fit(FitData(X, Y, auxiliary=Yc[:, 1:])).predict(X_NEW)
    np.testing.assert_array_equal(j1, j2)


def test_composites_take_instances_as_well_as_names(tmp_path):
    law = MixingLawPredictor(n_starts=2)
    by_name = get_predictor("stack", members=["linear", "mixing-law"], member_params={"mixing-law": {"n_starts": 2}},
                            n_splits=3).fit(X, Y)
    by_instance = get_predictor("stack", members=[LinearPredictor(), law], n_splits=3).fit(X, Y)
    np.testing.assert_allclose(by_instance.predict(X_NEW), by_name.predict(X_NEW), rtol=1e-12)
    by_instance.save(tmp_path / "s")  # an instance member is saved as its name and settings, and read back
    doc = json.loads((tmp_path / "s" / "predictor.json").read_text())
    assert doc["params"]["members"][1] == {"predictor": "mixing-law", "params": law.get_params()}
    np.testing.assert_array_equal(load_predictor(tmp_path / "s").predict(X_NEW), by_instance.predict(X_NEW))

    auto = get_predictor("auto", candidates=[LinearPredictor(), law], n_splits=3).fit(X, Y)
    assert [r["predictor"] for r in auto.cv_] == ["linear", "mixing-law"] and auto.chosen_ == "mixing-law"
    per_col = get_predictor("per-column", base=law).fit(X, Y)
    assert per_col.label == "mixing-law (per column)"
    np.testing.assert_allclose(per_col.predict(X_NEW), law.fit(X, Y).predict(X_NEW), rtol=1e-12)


def test_sklearn_clone_works_on_our_predictors():
    # DECISIONS 45: the hand-written get_params/set_params are kept; scikit-learn's tools still work on them.
    from sklearn.base import clone

    model = get_predictor("stack", members=["linear", "mixing-law"], n_splits=3)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()

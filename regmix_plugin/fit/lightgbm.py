"""LightGBM regression, RegMix's recipe: gbdt, 1000 iterations, learning rate 0.01.

RegMix's notebook passes its *test* set to early stopping; we never early-stop, so nothing about the
runs we evaluate on reaches the fit. The model is saved in LightGBM's native text format.
"""

from __future__ import annotations

import numpy as np

from regmix_plugin.fit.base import Predictor, State
from regmix_plugin.fit.registry import register

MODEL_FILE = "lightgbm.txt"


@register
class LightGBMPredictor(Predictor):
    name = "lightgbm"
    smooth = False
    flexibility = 4

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.01,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        # One thread: proxy-run tables are small (hundreds of rows), and OpenMP's second thread costs more
        # than it saves on a shared machine: 410 RegMix runs x 17 domains, 0.25 s with 1 thread against
        # 0.8-1.1 s (once 15.9 s) with 2, side by side on 2 loaded cores; same model (deterministic=True).
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _params(self, n_runs: int) -> dict:
        return {
            "objective": "regression",
            "boosting_type": "gbdt",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            # With very few runs the default leaf size would leave no split at all.
            "min_child_samples": max(1, min(self.min_child_samples, n_runs // 3)),
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.n_jobs,
            "verbose": -1,
        }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import lightgbm as lgb

        p = self._params(X.shape[0])
        data = lgb.Dataset(X, y, params={"verbose": -1})
        self.booster_ = lgb.train(p, data, num_boost_round=int(self.n_estimators))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict(X, num_threads=self.n_jobs)

    def _get_state(self) -> State:
        return State(texts={MODEL_FILE: self.booster_.model_to_string()})

    def _set_state(self, state: State) -> None:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_str=state.texts[MODEL_FILE])

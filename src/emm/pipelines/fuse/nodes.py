from __future__ import annotations

import logging

import pandas as pd

from emm.models.decomposition import Decomposition
from emm.models.emm import EMM
from emm.models.tabular import TabularData
from emm.models.training import TrainingConfig, fit, seed_model_initialisation

logger = logging.getLogger(__name__)


def train_fused_model(
    components: Decomposition,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_schema: dict,
    fuse_params: dict,
    training_params: dict,
) -> tuple[EMM, dict]:
    tasks = [task["name"] for task in feature_schema["tasks"]]
    config = TrainingConfig.from_params({**training_params, **fuse_params.get("training", {})})
    seed_model_initialisation(config.seed)
    model = EMM(components, tasks, fuse_params["model"])
    counts = model.parameter_counts()
    logger.info("EMM: %d trainable and %d frozen parameters", counts["trainable"], counts["frozen"])
    history = fit(
        model,
        TabularData.from_frame(train, feature_schema),
        TabularData.from_frame(validation, feature_schema),
        tasks,
        config,
        name="emm",
    )
    report = {"model": "emm", "tasks": tasks, **history.as_dict(), "parameters": counts}
    return model, report

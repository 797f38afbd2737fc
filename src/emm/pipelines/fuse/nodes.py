from __future__ import annotations

import logging

import pandas as pd

from emm.models.decomposition import Decomposition
from emm.models.emm import EMM
from emm.models.tabular import TabularData
from emm.models.training import TrainingConfig, fit, seed_model_initialisation

logger = logging.getLogger(__name__)

TRAINING_DATA = ("fusion_train", "train")


def train_fused_model(
    components: Decomposition,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_schema: dict,
    fuse_params: dict,
    training_params: dict,
    variant: dict | None = None,
    name: str = "emm",
) -> tuple[EMM, dict]:
    """Algorithm 2: train EMM over the decomposed pool; returns the model and its training report.

    ``variant`` (an entry of ``ablations``) overrides the model settings (``model``: the Table II switches)
    and the training settings (``training``) of ``fuse``.
    """
    variant = variant or {}
    tasks = [task["name"] for task in feature_schema["tasks"]]
    config = TrainingConfig.from_params(
        {**training_params, **fuse_params.get("training", {}), **variant.get("training", {})}
    )
    seed_model_initialisation(config.seed)
    try:
        model = EMM(components, tasks, {**fuse_params["model"], **variant.get("model", {})})
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    counts = model.parameter_counts()
    logger.info("%s: %d trainable and %d frozen parameters", name, counts["trainable"], counts["frozen"])
    history = fit(
        model,
        TabularData.from_frame(train, feature_schema),
        TabularData.from_frame(validation, feature_schema),
        tasks,
        config,
        name=name,
    )
    report = {"model": name, "tasks": tasks, "config": model.config, **history.as_dict(), "parameters": counts}
    return model, report

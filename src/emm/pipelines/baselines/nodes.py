from __future__ import annotations

import logging

import pandas as pd
from torch import nn

from emm.models.baselines import build_baseline
from emm.models.tabular import TabularData, input_signature
from emm.models.training import TrainingConfig, fit, seed_model_initialisation

logger = logging.getLogger(__name__)


def train_baseline(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_schema: dict,
    model_params: dict,
    training_params: dict,
    name: str,
) -> tuple[nn.Module, dict]:
    """Train one multi-task baseline on every task, with the dataset's training settings.

    ``model_params`` holds ``kind`` (a key of ``emm.models.baselines.BASELINES``), the model's settings,
    and optionally ``training`` overrides.
    """
    settings = dict(model_params)
    kind = settings.pop("kind", None)
    if kind is None:
        raise ValueError(f"Baseline {name!r} has no `kind` in its parameters")
    overrides = settings.pop("training", {})
    tasks = [task["name"] for task in feature_schema["tasks"]]
    config = TrainingConfig.from_params({**training_params, **overrides})
    seed_model_initialisation(config.seed)
    try:
        model = build_baseline(kind, input_signature(feature_schema), tasks, settings)
    except ValueError as error:
        raise ValueError(f"Baseline {name!r}: {error}") from error
    counts = model.parameter_counts()
    logger.info("Baseline %s (%s): %d parameters", name, kind, counts["trainable"])
    history = fit(
        model,
        TabularData.from_frame(train, feature_schema),
        TabularData.from_frame(validation, feature_schema),
        tasks,
        config,
        name=name,
    )
    report = {"model": name, "kind": kind, "tasks": tasks, **history.as_dict(), "parameters": counts}
    return model, report

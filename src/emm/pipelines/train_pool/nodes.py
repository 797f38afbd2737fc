from __future__ import annotations

import logging

import pandas as pd

from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import input_signature
from emm.models.training import TrainingConfig
from emm.pipelines.model_training import train_model

logger = logging.getLogger(__name__)


def train_pool_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_schema: dict,
    model_params: dict,
    pool_params: dict,
    training_params: dict,
    name: str,
) -> tuple[SingleTaskMLP, dict]:
    """Train one pool MLP on its task; returns the model and its training report."""
    task = model_params["task"]
    tasks = [t["name"] for t in feature_schema["tasks"]]
    if task not in tasks:
        raise ValueError(f"Pool model {name!r} is declared for task {task!r}, which is not one of {tasks}")
    spec = pool_model_spec(
        name=name,
        task=task,
        signature=input_signature(feature_schema),
        hidden_dims=model_params["hidden_dims"],
        embedding_dim=model_params.get("embedding_dim", pool_params["embedding_dim"]),
        dropout=model_params.get("dropout", pool_params["dropout"]),
        batch_norm=model_params.get("batch_norm", pool_params["batch_norm"]),
        activation=model_params.get("activation", pool_params["activation"]),
    )
    config = TrainingConfig.from_params({**training_params, **model_params.get("training", {})})
    model, report = train_model(
        lambda: SingleTaskMLP(spec), train, validation, feature_schema, [task], config, name
    )
    logger.info("Pool model %s: best validation AUC %.5f", name, report["best_validation_auc"][task])
    return model, {**report, "task": task}

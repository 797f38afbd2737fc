from __future__ import annotations

import pandas as pd
from torch import nn

from emm.models.baselines import build_baseline
from emm.models.tabular import input_signature
from emm.models.training import TrainingConfig
from emm.pipelines.model_training import train_model


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
    signature = input_signature(feature_schema)
    model, report = train_model(
        lambda: build_baseline(kind, signature, tasks, settings), train, validation, feature_schema, tasks, config, name
    )
    return model, {**report, "kind": kind}

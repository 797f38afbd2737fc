from __future__ import annotations

import pandas as pd

from emm.models.decomposition import Decomposition
from emm.models.emm import EMM
from emm.models.training import TrainingConfig
from emm.pipelines.model_training import train_model

TRAINING_DATA = ("fusion_train", "train")


def training_data(data: str, setting: str) -> str:
    """``data``, the catalog entry a fused model trains on, checked: one of ``TRAINING_DATA``."""
    if data not in TRAINING_DATA:
        raise ValueError(f"{setting} must be one of {TRAINING_DATA}, got {data!r}")
    return data


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
    settings = {**fuse_params["model"], **variant.get("model", {})}
    model, report = train_model(
        lambda: EMM(components, tasks, settings), train, validation, feature_schema, tasks, config, name
    )
    return model, {**report, "config": model.config}


def refine_fused_model(
    emm_model: EMM,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_schema: dict,
    refine_params: dict,
    training_params: dict,
    name: str = "emm_plus",
) -> tuple[EMM, dict]:
    """EMM+ (docs/method.md): the trained EMM plus its pool models' own chains and trained heads, starting as
    the average of EMM's logit and the pool's, then fine-tuned end to end on ``train`` (``refine.training``
    over the dataset's training settings). The starting weights are scored on validation first and kept if
    no epoch beats them."""
    tasks = [task["name"] for task in feature_schema["tasks"]]
    config = TrainingConfig.from_params(
        {**training_params, **refine_params.get("training", {}), "validate_start": True}
    )
    tune = refine_params.get("tune_components", True)
    model, report = train_model(
        lambda: EMM.with_pool_heads(emm_model, tune_components=tune),
        train,
        validation,
        feature_schema,
        tasks,
        config,
        name,
    )
    return model, {**report, "config": model.config}

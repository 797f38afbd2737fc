from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from emm.models.decomposition import Decomposition
from emm.models.emm import EMM
from emm.models.tabular import tabular_data
from emm.models.training import TrainingConfig, auc, predict_logits
from emm.pipelines.model_training import train_model

logger = logging.getLogger(__name__)

TRAINING_DATA = ("fusion_train", "train")
# The shares of EMM in EMM+'s starting logits tried by ``refine.emm_share: validation``.
SHARE_GRID = [step / 10 for step in range(11)]


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
    """EMM+ (docs/method.md): the trained EMM plus its pool models' own chains and trained heads, each task
    starting as a blend of EMM's logit and the pool's (``refine.emm_share``, see :func:`start_shares`), then
    fine-tuned end to end on ``train`` (``refine.training`` over the dataset's training settings). The
    starting weights are scored on validation first and kept if no epoch beats them."""
    tasks = [task["name"] for task in feature_schema["tasks"]]
    config = TrainingConfig.from_params(
        {**training_params, **refine_params.get("training", {}), "validate_start": True}
    )
    tune = refine_params.get("tune_components", True)
    shares = start_shares(
        emm_model, tabular_data(validation, feature_schema, config.max_in_memory_rows), refine_params.get("emm_share", 0.5)
    )
    logger.info("%s starts with EMM's share of each task's logit %s", name, shares)
    model, report = train_model(
        lambda: EMM.with_pool_heads(emm_model, tune_components=tune, emm_shares=[shares[task] for task in emm_model.tasks]),
        train,
        validation,
        feature_schema,
        tasks,
        config,
        name,
    )
    return model, {**report, "config": model.config, "emm_shares": shares}


def start_shares(emm_model: EMM, validation, setting: float | str) -> dict[str, float]:
    """EMM's share s_t of each task's starting logit in EMM+, ``s_t * EMM + (1 - s_t) * pool average``: the
    number ``setting`` for every task, or with ``validation`` the share of ``SHARE_GRID`` whose blend has
    the best validation AUC, task by task (the larger share on a tie; 0.5 where the AUC is undefined). The
    blend is linear in s_t, so two passes over the validation rows score every share."""
    tasks = emm_model.tasks
    if setting != "validation":
        return {task: float(setting) for task in tasks}
    fused = predict_logits(emm_model, validation)  # [N, T]
    pool_only = EMM.with_pool_heads(emm_model, tune_components=False, emm_shares=[0.0] * len(tasks))
    pool = predict_logits(pool_only, validation)  # [N, T]
    shares = {}
    for column, task in enumerate(tasks):
        labels = validation.labels[:, validation.task_index(task)].numpy()
        scores = [auc(labels, share * fused[:, column] + (1 - share) * pool[:, column]) for share in SHARE_GRID]
        if np.isnan(scores).all():
            shares[task] = 0.5
            continue
        best = max(range(len(SHARE_GRID)), key=lambda index: (np.nan_to_num(scores[index], nan=-1.0), index))
        shares[task] = SHARE_GRID[best]
    return shares

"""What every training node does: build a model from a seeded generator, train it by the one training loop
on the encoded tables, and report."""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable

from torch import nn

from emm.models.tabular import Table, tabular_data
from emm.models.training import TrainingConfig, fit, parameter_counts, seed_model_initialisation
from emm.pipelines.torchrun import train_with_torchrun

logger = logging.getLogger(__name__)


def model_seed(seed: int, name: str) -> int:
    """The seed of the model called ``name`` in a run seeded with ``seed``: two models declared with the same
    structure and task start from different weights and see batches in different orders, and a model's seed
    does not depend on which other models the run declares."""
    return zlib.crc32(f"{seed}:{name}".encode()) % 2**31


def train_model(
    build: Callable[[], nn.Module],
    train: Table,
    validation: Table,
    feature_schema: dict,
    tasks: list[str],
    config: TrainingConfig,
    name: str,
) -> tuple[nn.Module, dict]:
    """``build()`` runs right after seeding, so a model starts from the same weights whatever ran before it
    in the process; a ``ValueError`` from it is re-raised naming the model. Returns the trained model and
    its report: the training history (with the device it trained on), tasks and parameter counts. The
    model's seed is derived from the configuration's seed and ``name`` (:func:`model_seed`). Tables longer
    than the configuration's ``max_in_memory_rows`` are streamed from Parquet rather than loaded. The model
    trains on the configuration's ``device`` and is returned on the CPU, so that saved models and the
    evaluation do not depend on the machine that trained them. With ``distributed`` settings it trains
    with DDP in processes started by torchrun (``emm.pipelines.torchrun``), from the weights built here."""
    config = dataclasses.replace(config, seed=model_seed(config.seed, name))
    seed_model_initialisation(config.seed)
    try:
        model = build()
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    counts = parameter_counts(model)
    logger.info("%s: %d trainable and %d frozen parameters", name, counts["trainable"], counts["frozen"])
    if config.distributed is not None:
        model, history = train_with_torchrun(model, train, validation, feature_schema, tasks, config, name)
        return model, {"model": name, "tasks": tasks, "seed": config.seed, **history, "parameters": counts}
    loading = {"max_in_memory_rows": config.max_in_memory_rows, "shuffle_buffer_rows": config.shuffle_buffer_rows}
    history = fit(
        model,
        tabular_data(train, feature_schema, **loading),
        tabular_data(validation, feature_schema, **loading),
        tasks,
        config,
        name=name,
    )
    logger.info("%s: trained on %s", name, history.device)
    model.cpu()
    return model, {"model": name, "tasks": tasks, "seed": config.seed, **history.as_dict(), "parameters": counts}

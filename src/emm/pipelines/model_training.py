"""What every training node does: build a model from a seeded generator, train it by the one training loop
on the encoded tables, and report."""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from emm.models.tabular import Table, tabular_data
from emm.models.training import TrainingConfig, fit, parameter_counts, seed_model_initialisation

logger = logging.getLogger(__name__)


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
    its report: the training history, tasks and parameter counts. Tables longer than the configuration's
    ``max_in_memory_rows`` are streamed from Parquet rather than loaded."""
    seed_model_initialisation(config.seed)
    try:
        model = build()
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    counts = parameter_counts(model)
    logger.info("%s: %d trainable and %d frozen parameters", name, counts["trainable"], counts["frozen"])
    loading = {"max_in_memory_rows": config.max_in_memory_rows, "shuffle_buffer_rows": config.shuffle_buffer_rows}
    history = fit(
        model,
        tabular_data(train, feature_schema, **loading),
        tabular_data(validation, feature_schema, **loading),
        tasks,
        config,
        name=name,
    )
    return model, {"model": name, "tasks": tasks, **history.as_dict(), "parameters": counts}

from __future__ import annotations

import hashlib
import json
import logging

from emm.models.decomposition import Decomposition, decompose
from emm.models.mlp import SingleTaskMLP
from emm.models.tabular import input_signature

logger = logging.getLogger(__name__)


def check_pool(pool_models: dict[str, SingleTaskMLP], declared: dict[str, dict], feature_schema: dict) -> None:
    """Every pool model predicts the task its parameters declare, one of the data's tasks, from the data's
    features (same columns in the same order, same vocabulary sizes). A model trained elsewhere is read
    from a file; a mismatch found here stops the run before the decomposition is written, so the
    components of the last good pool stay as they were."""
    tasks = [task["name"] for task in feature_schema["tasks"]]
    signature = input_signature(feature_schema)
    for name, model in pool_models.items():
        declared_task = declared.get(name, {}).get("task")
        if model.task not in tasks:
            raise ValueError(f"Pool model {name!r} predicts task {model.task!r}, which is not one of the data's {tasks}")
        if declared_task is not None and model.task != declared_task:
            raise ValueError(
                f"Pool model {name!r} is declared for task {declared_task!r} (pool.models.{name}.task) but its "
                f"file holds a model of task {model.task!r}"
            )
        difference = _first_difference(_plain(model.spec["input"]), _plain(signature))
        if difference:
            raise ValueError(f"Pool model {name!r} reads other features than the data's schema: {difference}")


def _plain(signature: dict) -> dict[str, list]:
    """A signature as lists, however it was stored (tuples in memory, lists in a file)."""
    return {
        kind: [list(column) if isinstance(column, (list, tuple)) else column for column in signature.get(kind, [])]
        for kind in ("categorical", "dense")
    }


def _first_difference(model_input: dict[str, list], schema_input: dict[str, list]) -> str | None:
    for kind in ("categorical", "dense"):
        theirs, ours = model_input[kind], schema_input[kind]
        for position, (their, our) in enumerate(zip(theirs, ours)):
            if their != our:
                return f"{kind} column {position} is {their!r} in the model, {our!r} in the schema"
        if len(theirs) != len(ours):
            return f"{len(theirs)} {kind} columns in the model, {len(ours)} in the schema"
    return None


def model_fingerprint(model: SingleTaskMLP) -> str:
    """SHA-256 of a pool model's structure and weights: equal for the same model saved and loaded again."""
    digest = hashlib.sha256(json.dumps(model.spec, sort_keys=True).encode())
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def decompose_pool(
    decompose_params: dict, pool_params: dict, feature_schema: dict, **pool_models: SingleTaskMLP
) -> tuple[Decomposition, dict]:
    """Returns the components and a report of every model's layers, signatures and cuts, with the
    fingerprint of every pool model it decomposed (``pool_fingerprint``: what the project's hook compares
    to notice a pool that changed since, emm.hooks.RunChecksHook)."""
    check_pool(pool_models, pool_params["models"], feature_schema)
    decomposition = decompose(pool_models, max_levels=decompose_params["max_levels"])
    logger.info(
        "Decomposed %d models into %d levels of widths %s",
        len(pool_models),
        len(decomposition.levels),
        decomposition.level_dims,
    )
    fingerprint = {name: model_fingerprint(model) for name, model in sorted(pool_models.items())}
    return decomposition, {**decomposition.report, "pool_fingerprint": fingerprint}

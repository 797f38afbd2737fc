"""The MLflow model registry side of serving: each logged serving model becomes a version of
``emm_<namespace>``, and the alias ``champion`` moves to it only when it does strictly better.

The rule (docs/serving.md): a version's score is its mean validation AUC over the tasks where that AUC is
defined (the score the training loop keeps its best epoch by); the new version becomes champion when there
is no champion yet, or when its score is strictly greater than the champion's. A tie, a worse score or an
undefined one leaves the champion where it is. Scores come from the served model's card, which reads them
from the fused model's training report (``best_validation_auc``), and are stored as version tags, so the
comparison needs nothing but the registry.
"""

from __future__ import annotations

import logging
import math

import mlflow
from kedro.framework.hooks import hook_impl
from kedro_mlflow.pipeline.pipeline_ml import PipelineML
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

MODEL_CARD = "served_model_card"  # the catalog entry (inside the namespace) with the validation AUCs
MODEL_CARD_NODE = "describe_served_model"  # the serving training node that writes it
CHAMPION = "champion"
SCORE_TAG = "validation_auc.mean"  # the score the champion rule compares
TASK_TAG = "validation_auc.{task}"


class ServingRunError(RuntimeError):
    """A serving pipeline run in a way that would log no model; the message names the command that does."""


def check_serving_runs_alone(pipeline) -> None:
    """Refuse a run holding a serving pipeline's nodes that is not that PipelineML: kedro-mlflow logs the
    model only when the PipelineML is the whole run, and ``--pipelines=census_serving,census`` (a sum of
    pipelines, a plain Pipeline) would run every node and log nothing, without a word."""
    if isinstance(pipeline, PipelineML):
        return
    namespaces = sorted(
        {node.namespace for node in pipeline.nodes if node.name.endswith(f".{MODEL_CARD_NODE}") and node.namespace}
    )
    if namespaces:
        commands = "; ".join(f"`kedro run --pipelines={namespace}_serving`" for namespace in namespaces)
        raise ServingRunError(
            f"The serving pipeline of {', '.join(namespaces)} is run together with other nodes: kedro-mlflow "
            f"would log no model. Run the dataset's pipeline first, then {commands} alone."
        )


def registered_model_name(namespace: str) -> str:
    return f"emm_{namespace}"


def mean_validation_auc(validation_auc: dict[str, float | None]) -> float:
    """Mean over the tasks whose AUC is defined; NaN when none is."""
    defined = [value for value in validation_auc.values() if value is not None and not math.isnan(value)]
    return sum(defined) / len(defined) if defined else math.nan


def becomes_champion(candidate: float, champion: float | None) -> bool:
    """Strict improvement: a defined score above the champion's, or any defined score without a champion."""
    if math.isnan(candidate):
        return False
    return champion is None or math.isnan(champion) or candidate > champion


def register_served_model(client: MlflowClient, model_uri: str, name: str, card: dict, run_id: str):
    """Register ``model_uri`` as a new version of ``name``, tagged with its validation AUCs; move
    ``champion`` to it on strict improvement. Returns the version and whether it became champion."""
    score = mean_validation_auc(card["validation_auc"])
    tags = {TASK_TAG.format(task=task): str(value) for task, value in card["validation_auc"].items()}
    tags.update({SCORE_TAG: str(score), "fused_model": card["fused_model"], "source_run_id": run_id})
    version = mlflow.register_model(model_uri, name, tags=tags)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        champion_score = float(current.tags.get(SCORE_TAG, "nan"))
    except MlflowException:  # no champion yet
        current, champion_score = None, None
    promoted = becomes_champion(score, champion_score)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    logger.info(
        "Registered %s version %s (mean validation AUC %.6f); champion: %s",
        name,
        version.version,
        score,
        f"moved to version {version.version}"
        if promoted
        else f"stays version {current.version} (mean validation AUC {champion_score:.6f})"
        if current
        else "none (this version's score is undefined)",
    )
    return version, promoted


class ServingRegistryHook:
    """After a serving pipeline (a PipelineML) ran and kedro-mlflow's hook (TrackingHook) logged its
    model, registers that model as ``emm_<namespace>`` in the registry of the same MLflow store.

    Both implementations run last (``trylast``): before_pipeline_run once TrackingHook opened the MLflow
    run, after_pipeline_run once it logged the model and closed the run.
    """

    _run_id: str | None = None

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        active = mlflow.active_run()
        self._run_id = active.info.run_id if isinstance(pipeline, PipelineML) and active else None

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if self._run_id is None:
            return
        run_id, self._run_id = self._run_id, None
        namespace = pipeline.input_name.rpartition(".")[0]
        client = MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = mlflow.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
        )
        if not logged:
            logger.warning(
                "Run %s logged no model: nothing registered (was tracking disabled, or MLFLOW_RUN_ID set? A run "
                "joined to a scheduler's shared run logs no model)",
                run_id,
            )
            return
        card = catalog.load(f"{namespace}.{MODEL_CARD}")
        register_served_model(client, logged[0].model_uri, registered_model_name(namespace), card, run_id)

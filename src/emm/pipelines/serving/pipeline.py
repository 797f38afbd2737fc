"""The serving pipeline of a dataset: a kedro-mlflow ``PipelineML`` (docs/serving.md).

Its training part trains nothing: it reads what the dataset's own pipeline catalogued (encoders, feature
schema, the fused model and its training report) and writes the model's input example and its card
(tasks, validation AUC). Running it makes kedro-mlflow's hook log the inference part, with those catalogued
inputs as artifacts, as one MLflow pyfunc model: raw rows -> checked -> encoded -> fused model -> one
probability per task. The ``ServingRegistryHook`` (emm.pipelines.serving.registry) then registers it.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node
from kedro_mlflow.pipeline import pipeline_ml_factory
from kedro_mlflow.pipeline.pipeline_ml import PipelineML

from emm.pipelines import bind
from emm.pipelines.data_processing.nodes import encode_features
from emm.pipelines.serving.nodes import (
    describe_served_model,
    predict_probabilities,
    serving_input_example,
    serving_rows,
)
from emm.pipelines.serving.registry import MODEL_CARD, MODEL_CARD_NODE, registered_model_name

SERVING_INPUT = "serving_input"  # the input example in a run; the request's rows when served
# Stands for "take the input example from the input dataset", as kedro-mlflow's signature="auto" does for
# the signature; emm.hooks.TrackingHook resolves it when the model is logged.
AUTO = "auto"


def create_pipeline(
    namespace: str,
    fused_model: str,
    input_example_rows: int,
    raw_data: str | None = None,
    inference_form: bool = True,
) -> PipelineML:
    """The serving pipeline of ``namespace``; ``fused_model`` is ``emm`` or ``emm_plus``; ``raw_data``
    names the namespace whose raw files it reads (the namespace itself by default); ``inference_form``:
    the model answers through its inference form (emm.models.inference) rather than eagerly."""
    training = Pipeline(
        [
            node(
                bind(serving_input_example, rows=input_example_rows),
                ["raw_test", "encoders"],
                SERVING_INPUT,
                name="serving_input_example",
            ),
            node(
                bind(describe_served_model, fused_model_name=fused_model),
                [f"served_{fused_model}", f"{fused_model}_training", "feature_schema", "encoders"],
                MODEL_CARD,
                name=MODEL_CARD_NODE,
            ),
        ]
    )
    inference = Pipeline(
        [
            node(serving_rows, [SERVING_INPUT, "encoders"], "checked_serving_input", name="check_serving_input"),
            node(encode_features, ["checked_serving_input", "encoders"], "serving_features", name="encode_features"),
            node(
                bind(predict_probabilities, use_inference_form=inference_form),
                ["serving_features", "feature_schema", f"served_{fused_model}"],
                "serving_probabilities",
                name="predict_probabilities",
            ),
        ]
    )
    raw = raw_data or namespace
    inputs = {"raw_test": f"{raw}.raw_test"} if raw != namespace else None
    return pipeline_ml_factory(
        training=Pipeline(training, namespace=namespace, inputs=inputs),
        inference=Pipeline(inference, namespace=namespace),
        input_name=f"{namespace}.{SERVING_INPUT}",
        log_model_kwargs={
            "name": registered_model_name(namespace),
            "signature": AUTO,
            "input_example": AUTO,
        },
    )

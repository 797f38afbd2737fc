"""Nodes of the serving pipeline: raw rows in, one probability per task out.

The served input is a table in the raw file's column layout (for Census-Income, the UCI columns), feature
columns only: label columns and dropped columns may be sent and are ignored. Dense columns are numbers,
every other column a string, as the raw file holds them. Rows are checked here, column by column, so that
a bad request is refused naming the column rather than failing deep in the encoders or, for a missing
number, giving a NaN probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from torch import nn

from emm.datasets.served_model import ServedModel
from emm.models.tabular import TabularData
from emm.models.training import predict
from emm.pipelines.data_processing.nodes import feature_columns


class ServingInputError(MlflowException):
    """Rows that cannot be predicted; the message names the column. An MlflowException with
    INVALID_PARAMETER_VALUE, which MLflow's scoring server answers with HTTP 400 and this message."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def serving_rows(raw: pd.DataFrame, encoders: dict) -> pd.DataFrame:
    """Raw rows as the served model takes them: feature columns only, dense ones as numbers. Raises
    :class:`ServingInputError` naming the first column that is missing or holds a value of the wrong kind."""
    missing = [column for column in feature_columns(encoders) if column not in raw.columns]
    if missing:
        raise ServingInputError(f"Missing input column(s) {missing}; the model reads {feature_columns(encoders)}")
    rows = {}
    for column in encoders["categorical"]:
        values = raw[column]
        not_text = values.map(lambda value: not isinstance(value, str)).to_numpy().nonzero()[0]
        if len(not_text):
            raise ServingInputError(
                f"Column {column!r} takes strings; row {not_text[0]} holds {values.iloc[not_text[0]]!r}"
            )
        rows[column] = values.astype(str)
    for column in encoders["dense"]:
        numbers = pd.to_numeric(raw[column], errors="coerce").astype(np.float64)  # text that is no number: NaN
        bad = np.flatnonzero(~np.isfinite(numbers.to_numpy()))
        if len(bad):
            raise ServingInputError(
                f"Column {column!r} takes finite numbers; row {bad[0]} holds {raw[column].iloc[bad[0]]!r}"
            )
        rows[column] = numbers
    return pd.DataFrame(rows, columns=feature_columns(encoders)).reset_index(drop=True)


def serving_input_example(raw_test: pd.DataFrame, encoders: dict, rows: int) -> pd.DataFrame:
    """The first ``rows`` test rows in the served layout: the MLflow model's input example, from which
    its signature is inferred."""
    return serving_rows(raw_test.head(rows), encoders)


def describe_served_model(
    fused_model: ServedModel, training_report: dict, feature_schema: dict, encoders: dict, fused_model_name: str
) -> dict:
    """What the registry needs to know about the served model: its name, tasks and validation AUC per task
    (that of the weights kept, from its training report). Refuses a model whose tasks are not the data's."""
    tasks = [task["name"] for task in feature_schema["tasks"]]
    if list(fused_model.tasks) != tasks or [task["name"] for task in encoders["tasks"]] != tasks:
        raise ValueError(
            f"The fused model predicts {list(fused_model.tasks)}, the feature schema has tasks {tasks}: "
            "run the dataset's pipeline again before its serving pipeline"
        )
    validation_auc = training_report["best_validation_auc"]
    return {
        "fused_model": fused_model_name,
        "tasks": tasks,
        "validation_auc": {task: validation_auc.get(task) for task in tasks},
        "input_columns": feature_columns(encoders),
    }


def predict_probabilities(
    features: pd.DataFrame, feature_schema: dict, served_model: ServedModel | nn.Module, use_inference_form: bool = True
) -> pd.DataFrame:
    """One probability column per task, named by the task, one row per input row. With
    ``use_inference_form`` (``serving.inference_form``) a fused EMM answers through its inference form
    (emm.models.inference: the same logits within 1e-5, several times the rows/s and a fraction of the
    single-row latency); otherwise the eager model answers. A model logged before the served model was
    shared passes the module itself, which answers eagerly, as it did then."""
    answering = served_model.answering(use_inference_form) if isinstance(served_model, ServedModel) else served_model
    data = TabularData.from_frame(features, feature_schema, with_labels=False)
    probabilities = predict(answering, data)
    return pd.DataFrame(probabilities.astype(np.float64), columns=list(served_model.tasks))

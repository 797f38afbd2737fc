"""The schema of the project's parameters, checked before any node runs.

Without it a misspelt key (``dropuot``) was silently ignored and a wrong type (``batch_norm: "false"``, a
string, which is true) failed, or worse did not, only when a node hours into the run first read it.
:func:`validate_parameters` checks every dataset's block (a top-level key with a ``pool`` section) and the
``adaptability`` block, and names every error by its key path, e.g.
``census.pool.models.income_small.dropuot: unknown key``. Types are strict: a quoted boolean or number is
refused. Model settings (``fuse.model``, ``baselines.models.<name>``, ``ablations.<name>.model``) are
checked against the defaults of the model class that reads them, so the schema cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator


class ParameterError(ValueError):
    """Parameters that do not fit the schema; the message lists each error with its key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _check_against_defaults(settings: dict, defaults: dict, what: str) -> dict:
    """Keys known to ``defaults``, values of the defaults' types (bool strictly, int for float allowed)."""
    errors = []
    for key, value in settings.items():
        if key not in defaults:
            errors.append(f"{key}: unknown {what} setting (known: {', '.join(sorted(defaults))})")
            continue
        default = defaults[key]
        if default is None:  # optional setting of no fixed type (e.g. training.max_in_memory_rows)
            continue
        if isinstance(default, bool):
            fits = isinstance(value, bool)
        elif isinstance(default, int):
            fits = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (list, tuple)):
            fits = isinstance(value, (list, tuple))
        else:
            fits = isinstance(value, type(default))
        if not fits:
            errors.append(f"{key}: {value!r} is a {type(value).__name__}, expected {type(default).__name__}")
    if errors:
        raise ValueError("\n".join(errors))
    return settings


def _training_defaults() -> dict:
    from emm.models.training import TrainingConfig

    return {field.name: field.default for field in dataclasses.fields(TrainingConfig)}


class Training(_Strict):
    """``training`` and every ``training`` override: the fields of emm.models.training.TrainingConfig."""

    model_config = ConfigDict(extra="allow", strict=True)

    @model_validator(mode="after")
    def _known_fields(self) -> Training:
        _check_against_defaults(self.model_extra or {}, _training_defaults(), "training")
        return self


class Task(_Strict):
    name: str
    column: str
    positive: list[str | int | float | bool]


class ValueCodes(_Strict):
    columns: list[str]
    min_count: int


class PiecewiseLinear(_Strict):
    columns: list[str]
    bins: int

    @field_validator("bins")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class DataProcessing(_Strict):
    tasks: list[Task]
    dense_columns: list[str] = []
    log_scaled_columns: list[str] = []
    value_codes: ValueCodes | None = None
    piecewise_linear: PiecewiseLinear | None = None
    drop_columns: list[str] = []
    min_count: int | None = None
    validation_fraction: float
    fusion_fraction: float
    seed: int
    streaming: bool = False
    chunk_rows: int | None = None
    source: dict[str, Any] | None = None  # the raw reader's own options (e.g. AliExpress countries)

    @field_validator("validation_fraction", "fusion_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must be between 0 and 1, got {value}")
        return value

    @model_validator(mode="after")
    def _distinct_tasks(self) -> DataProcessing:
        names = [task.name for task in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks need one or more distinct names, got {names}")
        return self


class PoolModel(_Strict):
    task: str
    pretrained: bool = False
    hidden_dims: list[int] | None = None
    embedding_dim: int | None = None
    dropout: float | None = None
    batch_norm: bool | None = None
    activation: str | None = None
    training: Training | None = None

    @model_validator(mode="after")
    def _trained_here_needs_a_shape(self) -> PoolModel:
        if not self.pretrained and not self.hidden_dims:
            raise ValueError("a model trained here needs hidden_dims (or pretrained: true for a model file)")
        return self


class Pool(_Strict):
    embedding_dim: int
    dropout: float
    batch_norm: bool
    activation: str
    models: dict[str, PoolModel]


class Decompose(_Strict):
    max_levels: int


def _emm_settings(settings: dict) -> dict:
    from emm.models.emm import DEFAULT_CONFIG

    return _check_against_defaults(settings, DEFAULT_CONFIG, "EMM")


class Fuse(_Strict):
    model: dict[str, Any]
    training: Training | None = None

    @field_validator("model")
    @classmethod
    def _model_settings(cls, value: dict) -> dict:
        return _emm_settings(value)


class Refine(_Strict):
    training_data: Literal["fusion_train", "train", "pool_train"] = "train"
    tune_components: bool = True
    emm_share: float | Literal["validation"] = 0.5
    training: Training | None = None

    @field_validator("emm_share")
    @classmethod
    def _share(cls, value: float | str) -> float | str:
        if value != "validation" and not 0 <= value <= 1:
            raise ValueError(f"must be between 0 and 1 or 'validation', got {value}")
        return value


class Baselines(_Strict):
    models: dict[str, dict[str, Any]] | None = None

    @field_validator("models")
    @classmethod
    def _known_kinds(cls, models: dict[str, dict] | None) -> dict[str, dict] | None:
        from emm.models.baselines import BASELINES

        errors = []
        for name, settings in (models or {}).items():
            settings = dict(settings)
            kind = settings.pop("kind", None)
            training = settings.pop("training", None)
            if kind not in BASELINES:
                errors.append(f"{name}.kind: {kind!r} is not one of {sorted(BASELINES)}")
                continue
            for where, check, defaults in (
                (name, settings, BASELINES[kind].DEFAULT_CONFIG),
                (f"{name}.training", training or {}, _training_defaults()),
            ):
                try:
                    _check_against_defaults(check, defaults, kind if where == name else "training")
                except ValueError as error:
                    errors += [f"{where}.{line}" for line in str(error).splitlines()]
        if errors:
            raise ValueError("\n".join(errors))
        return models


class Ablation(_Strict):
    label: str
    model: dict[str, Any] = {}
    training: Training | None = None
    training_data: Literal["fusion_train", "train", "pool_train"] = "fusion_train"

    @field_validator("model")
    @classmethod
    def _model_settings(cls, value: dict) -> dict:
        return _emm_settings(value)


class Evaluate(_Strict):
    throughput_batch_size: int
    throughput_rows: int
    throughput_repeats: int
    latency_calls: int = 200
    latency_warm_up: int = 20
    inference_form: bool = True
    inference_compile: bool = False
    device: str = "cpu"


class Serving(_Strict):
    """``serving``: what the ``<dataset>_serving`` pipeline logs as the MLflow model (docs/serving.md)."""

    fused_model: Literal["emm", "emm_plus"] = "emm_plus"
    input_example_rows: int = 5
    inference_form: bool = True

    @field_validator("input_example_rows")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class Dataset(_Strict):
    """One dataset's block: ``census``, ``ali_ccp``, ..."""

    raw_data: str | None = None
    default_run: bool = True
    data_processing: DataProcessing
    training: Training
    pool: Pool
    decompose: Decompose
    fuse: Fuse
    refine: Refine | None = None
    baselines: Baselines | None = None
    ablations: dict[str, Ablation] | None = None
    evaluate: Evaluate
    serving: Serving | None = None

    @model_validator(mode="after")
    def _served_model_is_trained(self) -> Dataset:
        if self.serving and self.serving.fused_model == "emm_plus" and self.refine is None:
            raise ValueError("serving.fused_model: 'emm_plus' is trained only with a refine section; use 'emm'")
        return self

    @model_validator(mode="after")
    def _pool_tasks_are_data_tasks(self) -> Dataset:
        tasks = [task.name for task in self.data_processing.tasks]
        unknown = {name: model.task for name, model in self.pool.models.items() if model.task not in tasks}
        if unknown:
            raise ValueError(
                "\n".join(
                    f"pool.models.{name}.task: {task!r} is not one of data_processing.tasks {tasks}"
                    for name, task in unknown.items()
                )
            )
        return self


class Adaptability(_Strict):
    runs: list[str]


def _messages(detail: dict) -> list[tuple[str, str]]:
    """(key path below the error's location, message) pairs of one pydantic error. The project's own
    checks raise one line per key, ``relative.key.path: message``."""
    if detail["type"] == "extra_forbidden":
        return [("", "unknown key")]
    if detail["type"] == "missing":
        return [("", "missing")]
    if detail["type"] != "value_error":
        return [("", f"{detail['msg']} (got {detail.get('input')!r})")]
    pairs = []
    for line in detail["msg"].removeprefix("Value error, ").splitlines():
        key, separator, message = line.partition(": ")
        pairs.append((key, message) if separator and " " not in key else ("", line))
    return pairs


def validate_parameters(parameters: dict) -> None:
    """Raise :class:`ParameterError` listing every parameter that does not fit the schema."""
    errors = []
    for name, block in parameters.items():
        if name == "adaptability":
            schema = Adaptability
        elif isinstance(block, dict) and "pool" in block:
            schema = Dataset
        else:
            continue
        try:
            schema.model_validate(block)
        except ValidationError as error:
            for detail in error.errors():
                for key, message in _messages(detail):
                    path = ".".join(str(part) for part in (name, *detail["loc"], key) if part != "")
                    errors.append(f"{path}: {message}")
    if errors:
        raise ParameterError("Parameters that do not fit the schema (emm.parameters):\n  " + "\n  ".join(errors))

"""Test-set predictions of every model of a dataset, their AUCs, the gates' choices and the models' costs.

Models are passed by name; ``roles`` says what each one is: ``pool`` (a trained single-task model),
``emm`` (the fused model), ``baseline`` (a multi-task model trained end to end) or ``ablation`` (an EMM
variant of Table II). Tables and figures are drawn from these outputs by the ``report`` stage.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from emm.models.emm import EMM
from emm.models.inference import inference_form, keep_freed_memory
from emm.models.tabular import Table, TabularData, tabular_data
from emm.models.training import auc, parameter_counts, predict, resolve_device

logger = logging.getLogger(__name__)

POOL_ROW = "pool (all models)"


def _streamed(test: Table, feature_schema: dict):
    """The test table as model input, streamed: every use here reads it once, in table order."""
    return tabular_data(test, feature_schema, max_in_memory_rows=0)


def model_tasks(model: nn.Module) -> list[str]:
    """The tasks a model predicts, in the order of its outputs."""
    return list(model.tasks) if hasattr(model, "tasks") else [model.task]


def score_models(test: Table, feature_schema: dict, **models: nn.Module) -> pd.DataFrame:
    """Test-set probabilities: a column ``<model>.<task>`` per model and task it predicts, and the labels."""
    data = _streamed(test, feature_schema)
    tasks = [task["name"] for task in feature_schema["tasks"]]
    columns = {f"label.{task}": data.labels[:, i].numpy() for i, task in enumerate(tasks)}
    for name, model in models.items():
        probabilities = predict(model, data)
        columns.update({f"{name}.{task}": probabilities[:, i] for i, task in enumerate(model_tasks(model))})
    return pd.DataFrame(columns)


def prediction_columns(predictions: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, task) pairs in column order, labels left out."""
    return [tuple(c.rsplit(".", 1)) for c in predictions.columns if not c.startswith("label.")]


def compute_aucs(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """AUC keyed by model, then task."""
    aucs: dict[str, dict[str, float]] = {}
    tasks = sorted({task for _, task in prediction_columns(predictions)})
    for task in (task for task in tasks if predictions[f"label.{task}"].nunique() < 2):
        logger.warning("Test labels of task %s have one class: its AUC is undefined (null in test_aucs.json)", task)
    for model, task in prediction_columns(predictions):
        aucs.setdefault(model, {})[task] = auc(
            predictions[f"label.{task}"].to_numpy(), predictions[f"{model}.{task}"].to_numpy()
        )
    return aucs


def test_metrics(aucs: dict[str, dict[str, float]]) -> dict:
    return {
        f"test_auc.{model}.{task}": {"value": auc, "step": 0}
        for model, scores in aucs.items()
        for task, auc in scores.items()
    }


@torch.no_grad()
def gate_statistics(emm_model: EMM, test: Table, feature_schema: dict, batch_size: int = 8192) -> dict:
    """Mean gate weights on the test set, per level and task: task gates over components (eq. 2),
    fusion gates over tasks (eq. 3) with the share of samples choosing each task, MTM attention."""
    data = _streamed(test, feature_schema)
    emm_model.eval()
    tasks, decomposition = emm_model.tasks, emm_model.decomposition
    sums: dict = {}
    for batch, _ in data.batches(batch_size):
        _, diagnostics = emm_model.forward_with_diagnostics(batch)
        for depth, level in enumerate(diagnostics):
            for t, task in enumerate(tasks):
                entry = sums.setdefault((depth, task), {"task_gate": 0, "fusion_gate": 0, "choice": 0, "attention": 0})
                entry["task_gate"] += level.task_gates[t].sum(0)
                if level.fusion_gates:
                    entry["fusion_gate"] += level.fusion_gates[t].sum(0)
                    entry["choice"] += torch.bincount(level.fusion_choices[t], minlength=len(tasks))
                    entry["attention"] += level.attention[t].sum(0)
    n = len(data)
    levels = []
    for depth in range(len(emm_model.levels)):
        per_task = {}
        for task in tasks:
            entry = sums[(depth, task)]
            per_task[task] = {
                "task_gate": dict(zip(decomposition.models_of(task), (entry["task_gate"] / n).tolist())),
            }
            if emm_model.levels[depth].use_mtm:
                per_task[task]["fusion_gate"] = dict(zip(tasks, (entry["fusion_gate"] / n).tolist()))
                per_task[task]["choice_share"] = dict(zip(tasks, (entry["choice"] / n).tolist()))
                per_task[task]["attention"] = dict(zip(["own", "selected"], (entry["attention"] / n).tolist()))
        levels.append({"level": depth + 1, "tasks": per_task})
    return {"levels": levels}


@torch.inference_mode()
def _rows_per_second(
    entries: list[list[nn.Module]], data: TabularData, batch_size: int, repeats: int, device: torch.device
) -> list[float]:
    """Rows/s of each entry, the best of ``repeats`` timed passes over ``data`` after an untimed one (the
    first calls of a model are slower while the kernels warm up); an entry of several models runs them one
    after the other on every batch, as a deployed pool of single-task models would. The entries take turns
    pass by pass, so that a spell of other load on the machine slows a pass of every entry instead of every
    pass of one. The rows are on ``device`` before the clock starts."""
    for models in entries:
        for model in models:
            model.eval()
    batches = [batch.to(device) for batch, _ in data.batches(batch_size)]
    best = [float("inf")] * len(entries)
    for attempt in range(repeats + 1):
        for index, models in enumerate(entries):
            started = time.perf_counter()
            for batch in batches:
                for model in models:
                    model(batch)
            _synchronize(device)
            if attempt:
                best[index] = min(best[index], time.perf_counter() - started)
    return [len(data) / seconds for seconds in best]


# Single-row calls are timed in this many rounds, the entries taking turns round by round.
LATENCY_ROUNDS = 10


@torch.inference_mode()
def _latencies_ms(
    entries: list[list[nn.Module]], data: TabularData, calls: int, warm_up: int, device: torch.device
) -> list[float]:
    """Median milliseconds of one call on a single row of each entry, over ``calls`` calls on the table's
    first rows (cycled when it has fewer) after ``warm_up`` untimed ones; an entry of several models runs
    them one after the other. The calls are split into ``LATENCY_ROUNDS`` rounds and the entries take turns
    round by round, so that a spell of other load slows a round of every entry rather than every call of
    one; a round is several calls long so that an entry's weights are back in cache after its first. The
    row is on ``device`` before the clock starts; the time runs until the result is there."""
    for models in entries:
        for model in models:
            model.eval()
    rows = [data.batch(slice(i, i + 1))[0].to(device) for i in range(min(calls, len(data)))]
    rows = [rows[i % len(rows)] for i in range(calls)]
    for batch in rows[:warm_up]:
        for models in entries:
            for model in models:
                model(batch)
    round_calls = -(-calls // LATENCY_ROUNDS)
    times: list[list[float]] = [[] for _ in entries]
    for first in range(0, calls, round_calls):
        for index, models in enumerate(entries):
            for batch in rows[first : first + round_calls]:
                _synchronize(device)
                started = time.perf_counter()
                for model in models:
                    model(batch)
                _synchronize(device)
                times[index].append(time.perf_counter() - started)
    return [float(np.median(entry_times) * 1e3) for entry_times in times]


def _synchronize(device: torch.device) -> None:
    """Kernels on a GPU run asynchronously: a timing ends when they are done, not when they are queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _largest_logit_difference(
    first: nn.Module, second: nn.Module, data: TabularData, batch_size: int, device: torch.device
) -> float:
    return max(
        float((first(batch) - second(batch)).abs().max())
        for batch in (batch.to(device) for batch, _ in data.batches(batch_size))
    )


MODEL_INPUT, TRAINING_INPUT = "model__", "training__"
INFERENCE_FORM = " (inference form)"  # suffix of the row of a fused model's inference form

# Settings of the `evaluate` block that a dataset may leave out.
EVALUATE_DEFAULTS = {
    "latency_calls": 200,  # single-row calls per latency measurement
    "latency_warm_up": 20,  # untimed single-row calls before them
    "inference_form": True,  # also time every fused model's inference form (emm.models.inference)
    "inference_compile": False,  # ... run through torch.compile (compiled before timing, the time reported)
    "device": "cpu",  # where the models are timed: cpu, cuda, auto (emm.models.training.resolve_device)
}


def measure_costs(
    test: Table,
    feature_schema: dict,
    evaluate_params: dict,
    roles: dict[str, str],
    **inputs: nn.Module | dict,
) -> pd.DataFrame:
    """Parameters, training seconds and inference costs of every model on the ``device`` setting (the
    CPU by default), all measured in this one process and on the same rows: rows/s at ``throughput_batch_size`` and the latency of a single row
    (median ms); plus a row for the whole pool run side by side, and per fused model (role ``emm``) a row
    for its inference form (``emm.models.inference``: the same model, its predictions equal within float
    rounding, the largest logit difference on the rows in ``max_logit_difference``).

    ``inputs`` are the models as ``model__<name>`` and their training reports as ``training__<name>``.
    """
    settings = {**EVALUATE_DEFAULTS, **evaluate_params}
    models = {key.removeprefix(MODEL_INPUT): value for key, value in inputs.items() if key.startswith(MODEL_INPUT)}
    training_reports = {
        key.removeprefix(TRAINING_INPUT): value for key, value in inputs.items() if key.startswith(TRAINING_INPUT)
    }
    rows = min(len(test), settings["throughput_rows"])
    data = TabularData.from_frame(test.head(rows), feature_schema)
    batch_size, repeats = settings["throughput_batch_size"], settings["throughput_repeats"]
    calls, warm_up = settings["latency_calls"], settings["latency_warm_up"]
    device = resolve_device(settings["device"])
    for model in models.values():
        model.to(device)
    # Every model is timed with freed buffers kept for reuse: with glibc's default the timings of a model
    # that allocates large temporaries hang on page faults whose number depends on the process's history.
    keep_freed_memory()

    table, timed = [], []  # a row of the table per entry, and the models each entry runs
    for name, model in models.items():
        counts = parameter_counts(model)
        row = {
            "model": name,
            "role": roles[name],
            "form": "eager",
            "trainable_parameters": counts["trainable"],
            "frozen_parameters": counts["frozen"],
            "train_seconds": training_reports[name]["seconds"] if name in training_reports else np.nan,
        }
        table.append(row)
        timed.append([model])
        if roles[name] == "emm" and settings["inference_form"] and isinstance(model, EMM):
            model.eval()
            started = time.perf_counter()
            form = inference_form(model, compile=settings["inference_compile"])
            if settings["inference_compile"]:  # compiling happens on the first calls: before the timing
                with torch.inference_mode():
                    form(data.batch(slice(0, batch_size))[0]), form(data.batch(slice(0, 1))[0])
            build_seconds = time.perf_counter() - started
            table.append(
                {
                    **row,
                    "model": f"{name}{INFERENCE_FORM}",
                    "form": "inference (compiled)" if settings["inference_compile"] else "inference",
                    "train_seconds": np.nan,
                    "build_seconds": build_seconds,
                    "max_logit_difference": _largest_logit_difference(model, form, data, batch_size, device),
                }
            )
            timed.append([form])
    pool = [name for name in models if roles[name] == "pool"]
    if pool:
        table.append(
            {
                "model": POOL_ROW,
                "role": "pool",
                "form": "eager",
                "trainable_parameters": sum(row["trainable_parameters"] for row in table if row["model"] in pool),
                "frozen_parameters": 0,
                "train_seconds": sum(training_reports[name]["seconds"] for name in pool if name in training_reports),
            }
        )
        timed.append([models[name] for name in pool])
    throughputs = _rows_per_second(timed, data, batch_size, repeats, device)
    latencies = _latencies_ms(timed, data, calls, warm_up, device)
    for row, throughput, latency in zip(table, throughputs, latencies):
        row["rows_per_second"], row["latency_ms"] = throughput, latency
    frame = pd.DataFrame(table)
    for column in ("build_seconds", "max_logit_difference"):
        if column not in frame:
            frame[column] = np.nan
    frame["throughput_batch_size"] = batch_size
    frame["latency_calls"] = calls
    frame["threads"] = torch.get_num_threads()
    frame["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return frame


def cost_metrics(costs: pd.DataFrame) -> dict:
    metrics = {}
    for _, row in costs.iterrows():
        key = row["model"].replace(" ", "_").replace("(", "").replace(")", "")
        metrics[f"rows_per_second.{key}"] = {"value": float(row["rows_per_second"]), "step": 0}
        if "latency_ms" in row and not pd.isna(row["latency_ms"]):
            metrics[f"latency_ms.{key}"] = {"value": float(row["latency_ms"]), "step": 0}
        if not pd.isna(row["train_seconds"]):
            metrics[f"train_seconds.{key}"] = {"value": float(row["train_seconds"]), "step": 0}
    return metrics

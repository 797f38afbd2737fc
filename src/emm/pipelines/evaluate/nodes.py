from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from emm.models.emm import EMM
from emm.models.mlp import SingleTaskMLP
from emm.models.tabular import TabularData
from emm.models.training import predict

FUSED = "emm"
POOL_AVERAGE = "pool average"


def _tasks(feature_schema: dict) -> list[str]:
    return [task["name"] for task in feature_schema["tasks"]]


def score_models(
    test: pd.DataFrame, feature_schema: dict, emm_model: EMM, **pool_models: SingleTaskMLP
) -> pd.DataFrame:
    """Test-set probabilities: a column ``<model>.<task>`` per model and task it predicts, and the labels."""
    data = TabularData.from_frame(test, feature_schema)
    tasks = _tasks(feature_schema)
    columns = {f"label.{task}": data.labels[:, i].numpy() for i, task in enumerate(tasks)}
    for name, model in pool_models.items():
        columns[f"{name}.{model.task}"] = predict(model, data)[:, 0]
    fused = predict(emm_model, data)
    columns.update({f"{FUSED}.{task}": fused[:, i] for i, task in enumerate(tasks)})
    return pd.DataFrame(columns)


def _prediction_columns(predictions: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, task) pairs in column order, labels left out."""
    return [tuple(c.rsplit(".", 1)) for c in predictions.columns if not c.startswith("label.")]


def compute_aucs(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """AUC keyed by model, then task."""
    aucs: dict[str, dict[str, float]] = {}
    for model, task in _prediction_columns(predictions):
        auc = roc_auc_score(predictions[f"label.{task}"], predictions[f"{model}.{task}"])
        aucs.setdefault(model, {})[task] = float(auc)
    return aucs


def results_table(aucs: dict[str, dict[str, float]], feature_schema: dict) -> pd.DataFrame:
    """Table I for one dataset: AUC per model and task, the pool average, EMM's gains over it."""
    tasks = _tasks(feature_schema)
    pool = {model: scores for model, scores in aucs.items() if model != FUSED}
    rows = [{"model": model, **{f"auc_{task}": scores.get(task) for task in tasks}} for model, scores in pool.items()]
    average = {task: float(np.mean([s[task] for s in pool.values() if task in s])) for task in tasks}
    best = {task: max(s[task] for s in pool.values() if task in s) for task in tasks}
    rows.append({"model": POOL_AVERAGE, **{f"auc_{task}": average[task] for task in tasks}})
    rows.append(
        {
            "model": FUSED,
            **{f"auc_{task}": aucs[FUSED][task] for task in tasks},
            **{f"gain_vs_pool_average_{task}": aucs[FUSED][task] - average[task] for task in tasks},
            **{f"gain_vs_best_pool_{task}": aucs[FUSED][task] - best[task] for task in tasks},
        }
    )
    return pd.DataFrame(rows)


def results_markdown(table: pd.DataFrame, feature_schema: dict) -> str:
    """The table as Markdown, the best AUC per task in bold."""
    tasks = _tasks(feature_schema)
    header = ["model", *[f"AUC {t}" for t in tasks], *[f"gain {t} (vs pool avg)" for t in tasks]]
    best = {t: table.loc[table["model"] != POOL_AVERAGE, f"auc_{t}"].max() for t in tasks}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["model"]]
        for task in tasks:
            value = row[f"auc_{task}"]
            text = "" if pd.isna(value) else f"{value:.5f}"
            cells.append(f"**{text}**" if text and value == best[task] and row["model"] != POOL_AVERAGE else text)
        for task in tasks:
            gain = row.get(f"gain_vs_pool_average_{task}")
            cells.append("" if gain is None or pd.isna(gain) else f"{gain:+.5f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def test_metrics(aucs: dict[str, dict[str, float]]) -> dict:
    return {
        f"test_auc.{model}.{task}": {"value": auc, "step": 0}
        for model, scores in aucs.items()
        for task, auc in scores.items()
    }


def plot_roc_curves(predictions: pd.DataFrame, feature_schema: dict) -> Figure:
    tasks = _tasks(feature_schema)
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 5), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        labels = predictions[f"label.{task}"]
        for model, model_task in _prediction_columns(predictions):
            if model_task != task:
                continue
            scores = predictions[f"{model}.{task}"]
            false_positive, true_positive, _ = roc_curve(labels, scores)
            style = {"linewidth": 2.2, "color": "black"} if model == FUSED else {"linewidth": 1.2, "alpha": 0.8}
            axis.plot(false_positive, true_positive, label=f"{model} ({roc_auc_score(labels, scores):.4f})", **style)
        chance = np.logspace(-4, 0, 50)
        axis.plot(chance, chance, linestyle=":", color="grey")
        # At AUCs near 1 the curves differ only at small false-positive rates: a log axis shows where.
        axis.set_xscale("log")
        axis.set(
            title=f"ROC: {task}", xlabel="false positive rate (log scale)", ylabel="true positive rate",
            xlim=(1e-4, 1), ylim=(0, 1.01),
        )
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


@torch.no_grad()
def gate_statistics(emm_model: EMM, test: pd.DataFrame, feature_schema: dict, batch_size: int = 8192) -> dict:
    """Mean gate weights on the test set, per level and task: task gates over components (eq. 2),
    fusion gates over tasks (eq. 3) with the share of samples choosing each task, MTM attention."""
    data = TabularData.from_frame(test, feature_schema)
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


def plot_gate_statistics(statistics: dict) -> Figure:
    """One row per level: task-gate weights per component, and MTM's attention on own vs selected task."""
    levels = statistics["levels"]
    figure, axes = plt.subplots(len(levels), 2, figsize=(12, 2.8 * len(levels)), squeeze=False)
    for row, level in zip(axes, levels):
        gate_axis, attention_axis = row
        labels, values, colors = [], [], []
        for index, (task, entry) in enumerate(level["tasks"].items()):
            for model, weight in entry["task_gate"].items():
                labels.append(model)
                values.append(weight)
                colors.append(f"C{index}")
        gate_axis.barh(labels, values, color=colors)
        gate_axis.set(xlim=(0, 1), title=f"level {level['level']}: task gate weight per component (eq. 2)")
        tasks = list(level["tasks"])
        if all("attention" in level["tasks"][t] for t in tasks):
            own = [level["tasks"][t]["attention"]["own"] for t in tasks]
            picked = [
                max((share, other) for other, share in level["tasks"][t]["choice_share"].items() if other != t)[1]
                for t in tasks
            ]
            labels = [f"{task}\n(picks {other})" for task, other in zip(tasks, picked)]
            attention_axis.barh(labels, own, color="C7", label="own task")
            attention_axis.barh(labels, [1 - o for o in own], left=own, color="C3", label="selected task")
            attention_axis.set(xlim=(0, 1), title="MTM attention on own vs selected task (eqs. 4-6)")
        else:
            attention_axis.set_axis_off()
    handles, names = axes[0][1].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="upper right", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from emm.pipelines.evaluate.nodes import INFERENCE_FORM, POOL_ROW, prediction_columns
from emm.pipelines.inventory import ABLATION, BASELINE, EMM, POOL

POOL_AVERAGE = "pool average"


def _tasks(feature_schema: dict) -> list[str]:
    return [task["name"] for task in feature_schema["tasks"]]


def _auc_row(model: str, label: str, role: str, scores: dict[str, float], tasks: list[str]) -> dict:
    return {"model": model, "label": label, "role": role, **{f"auc_{task}": scores.get(task, np.nan) for task in tasks}}


def comparison_table(aucs: dict[str, dict[str, float]], feature_schema: dict, labels: dict, roles: dict) -> pd.DataFrame:
    """Table I: AUC per task of the pool models, their average, the baselines and EMM, with every
    multi-task model's gain over the pool average (the paper's "gain")."""
    tasks = _tasks(feature_schema)
    pool = [m for m in aucs if roles.get(m) == POOL]
    rows = [_auc_row(m, labels[m], POOL, aucs[m], tasks) for m in pool]
    average = {task: float(np.mean([aucs[m][task] for m in pool if task in aucs[m]])) for task in tasks}
    rows.append(_auc_row(POOL_AVERAGE, POOL_AVERAGE, POOL, average, tasks))
    for model in [m for m in aucs if roles.get(m) == BASELINE] + [m for m in aucs if roles.get(m) == EMM]:
        row = _auc_row(model, labels[model], roles[model], aucs[model], tasks)
        row.update({f"gain_{task}": aucs[model][task] - average[task] for task in tasks})
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(aucs: dict[str, dict[str, float]], feature_schema: dict, labels: dict, roles: dict) -> pd.DataFrame:
    """Table II: the EMM variants and EMM itself, with gains over the first variant (the paper's
    "baseline": the EMM structure from scratch, without MTM)."""
    tasks = _tasks(feature_schema)
    models = [m for m in aucs if roles.get(m) == ABLATION] + [m for m in aucs if roles.get(m) == EMM]
    if len(models) < 2:
        raise ValueError("Table II needs at least one ablation besides EMM; declare them under `ablations`")
    reference = aucs[models[0]]
    rows = []
    for model in models:
        row = _auc_row(model, labels[model], roles[model], aucs[model], tasks)
        row.update({f"gain_{task}": aucs[model][task] - reference[task] for task in tasks})
        rows.append(row)
    return pd.DataFrame(rows)


def best_two_values(table: pd.DataFrame, column: str) -> list[float]:
    """The two largest distinct values of ``column``, the pool average's row left out (it is not ranked)."""
    return sorted(table.loc[table["model"] != POOL_AVERAGE, column].dropna().unique(), reverse=True)[:2]


def emphasised(text: str, value: float, best_two: list[float], model: str) -> str:
    """``text`` in bold for the best value, in italics for the second (Markdown); the pool average as is."""
    if model == POOL_AVERAGE:
        return text
    if value == best_two[0]:
        return f"**{text}**"
    return f"*{text}*" if value in best_two[1:] else text


def auc_markdown(table: pd.DataFrame, feature_schema: dict) -> str:
    """A table of AUCs as Markdown: per task the best AUC in bold, the second best in italics (the pool
    average is not ranked), gains with their sign."""
    tasks = _tasks(feature_schema)
    best_two = {task: best_two_values(table, f"auc_{task}") for task in tasks}
    header = ["model", "role", *[f"AUC {t}" for t in tasks]]
    has_gains = any(f"gain_{t}" in table for t in tasks)
    if has_gains:
        header += [f"gain {t}" for t in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["label"], row["role"]]
        for task in tasks:
            value = row[f"auc_{task}"]
            if pd.isna(value):
                cells.append("")
                continue
            cells.append(emphasised(f"{value:.5f}", value, best_two[task], row["model"]))
        if has_gains:
            for task in tasks:
                gain = row.get(f"gain_{task}")
                cells.append("" if gain is None or pd.isna(gain) else f"{gain:+.5f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_markdown(costs: pd.DataFrame, labels: dict) -> str:
    """The cost table as Markdown: parameters, training seconds, inference rows/s and single-row latency,
    a fused model's inference form on a row of its own under the model."""
    batch_size, threads = int(costs["throughput_batch_size"].iloc[0]), int(costs["threads"].iloc[0])
    has_latency = "latency_ms" in costs
    timing = f"rows/s at batch {batch_size}"
    if has_latency:
        calls = int(costs["latency_calls"].iloc[0]) if "latency_calls" in costs else None
        timing += " and latency of a single row (median ms" + (f" of {calls} calls)" if calls else ")")
    device = str(costs["device"].iloc[0]) if "device" in costs else "cpu"
    where = f"CPU with {threads} thread{'s' if threads != 1 else ''}" if device == "cpu" else device
    lines = [
        f"Inference on {where}: {timing}, every model measured in one process on the same rows, the models "
        "taking turns pass by pass for rows/s and round by round of single-row calls for latency, with freed "
        "buffers kept for reuse "
        "(`emm.models.inference.keep_freed_memory`).",
        "",
        "| model | role | trainable parameters | frozen parameters | training s | rows/s |"
        + (" latency ms |" if has_latency else ""),
        "|---|---|---|---|---|---|" + ("---|" if has_latency else ""),
    ]
    forms = []
    for _, row in costs.iterrows():
        name = row["model"]
        if str(row.get("form", "eager")).startswith("inference") and name.endswith(INFERENCE_FORM):
            base = name.removesuffix(INFERENCE_FORM)
            label = f"{labels.get(base, base)}{INFERENCE_FORM}"
            forms.append((label, row))
        else:
            label = labels.get(name, name)
        seconds = "" if pd.isna(row["train_seconds"]) else f"{row['train_seconds']:.1f}"
        cells = [
            label,
            row["role"],
            f"{int(row['trainable_parameters']):,}",
            f"{int(row['frozen_parameters']):,}",
            seconds,
            f"{row['rows_per_second']:,.0f}",
        ]
        if has_latency:
            cells.append("" if pd.isna(row["latency_ms"]) else f"{row['latency_ms']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    for label, row in forms:
        compiled = ", through torch.compile" if "compiled" in str(row.get("form", "")) else ""
        lines += [
            "",
            f"{label}: the same trained model run by `emm.models.inference.inference_form`{compiled} (eval "
            "BatchNorm folded into the Linears, the embeddings and first Linears folded into one table, small "
            "columns sharing rows, components of one shape on stacked weights), built in "
            f"{row['build_seconds']:.2f} s; its logits differ from the eager model's by at most "
            f"{row['max_logit_difference']:.1e} on these rows.",
        ]
    return "\n".join(lines) + "\n"


def plot_roc_curves(predictions: pd.DataFrame, feature_schema: dict, labels: dict, roles: dict) -> Figure:
    """ROC per task of the pool models, the baselines and EMM (ablations are left out to keep it legible)."""
    tasks = _tasks(feature_schema)
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 5), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        truth = predictions[f"label.{task}"]
        for model, model_task in prediction_columns(predictions):
            if model_task != task or roles.get(model) == ABLATION:
                continue
            scores = predictions[f"{model}.{task}"]
            false_positive, true_positive, _ = roc_curve(truth, scores)
            style = (
                {"linewidth": 2.4, "color": "black"}
                if roles.get(model) == EMM
                else {"linewidth": 1.1, "alpha": 0.8, "linestyle": "--" if roles.get(model) == POOL else "-"}
            )
            label = f"{labels.get(model, model)} ({roc_auc_score(truth, scores):.4f})"
            axis.plot(false_positive, true_positive, label=label, **style)
        chance = np.logspace(-4, 0, 50)
        axis.plot(chance, chance, linestyle=":", color="grey")
        # At AUCs near 1 the curves differ only at small false-positive rates: a log axis shows where.
        axis.set_xscale("log")
        axis.set(
            title=f"ROC: {task}", xlabel="false positive rate (log scale)", ylabel="true positive rate",
            xlim=(1e-4, 1), ylim=(0, 1.01),
        )
        axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    return figure


def plot_gate_statistics(statistics: dict) -> Figure:
    """One row per level: task-gate weights per component, and MTM's attention on own vs selected task."""
    levels = statistics["levels"]
    figure, axes = plt.subplots(len(levels), 2, figsize=(12, 0.5 + 0.35 * _component_count(levels[0]) * len(levels) + 1.5 * len(levels)), squeeze=False)
    for row, level in zip(axes, levels):
        gate_axis, attention_axis = row
        names, values, colors = [], [], []
        for index, (task, entry) in enumerate(level["tasks"].items()):
            for model, weight in entry["task_gate"].items():
                names.append(model)
                values.append(weight)
                colors.append(f"C{index}")
        gate_axis.barh(names, values, color=colors)
        gate_axis.set(xlim=(0, 1), title=f"level {level['level']}: task gate weight per component (eq. 2)")
        tasks = list(level["tasks"])
        if all("attention" in level["tasks"][t] for t in tasks):
            own = [level["tasks"][t]["attention"]["own"] for t in tasks]
            picked = [
                max((share, other) for other, share in level["tasks"][t]["choice_share"].items() if other != t)[1]
                for t in tasks
            ]
            names = [f"{task}\n(picks {other})" for task, other in zip(tasks, picked)]
            attention_axis.barh(names, own, color="C7", label="own task")
            attention_axis.barh(names, [1 - o for o in own], left=own, color="C3", label="selected task")
            attention_axis.set(xlim=(0, 1), title="MTM attention on own vs selected task (eqs. 4-6)")
        else:
            attention_axis.set_axis_off()
    handles, names = axes[0][1].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="upper right", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure


def _component_count(level: dict) -> int:
    return sum(len(entry["task_gate"]) for entry in level["tasks"].values())


def fusion_choices(statistics: dict) -> pd.DataFrame:
    """Which task each task's fusion gate picks (eq. 3): the share of test samples per level and task."""
    rows = []
    for level in statistics["levels"]:
        for task, entry in level["tasks"].items():
            for chosen, share in entry.get("choice_share", {}).items():
                if chosen != task:
                    rows.append({"level": level["level"], "task": task, "picks": chosen, "share": share})
    if not rows:
        raise ValueError("EMM has no fusion gates (use_mtm is off or there is one task): nothing to report")
    return pd.DataFrame(rows)


def fusion_choices_markdown(choices: pd.DataFrame) -> str:
    tasks = list(dict.fromkeys(choices["task"]))
    lines = ["| level | task | " + " | ".join(f"picks {t}" for t in tasks) + " |", "|" + "---|" * (len(tasks) + 2)]
    for (level, task), group in choices.groupby(["level", "task"], sort=False):
        shares = dict(zip(group["picks"], group["share"]))
        cells = ["-" if t == task else f"{shares.get(t, 0.0):.1%}" for t in tasks]
        lines.append(f"| {level} | {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_fusion_choices(choices: pd.DataFrame) -> Figure:
    """A heat map per level: row = task whose fusion gate chooses, column = task chosen, colour = share."""
    tasks = list(dict.fromkeys(choices["task"]))
    levels = sorted(choices["level"].unique())
    side = 1.6 + 0.9 * len(tasks)
    figure, axes = plt.subplots(
        1, len(levels), figsize=(side * len(levels) + 1.0, side + 0.6), squeeze=False, layout="constrained"
    )
    for axis, level in zip(axes[0], levels):
        matrix = np.full((len(tasks), len(tasks)), np.nan)
        for _, row in choices[choices["level"] == level].iterrows():
            matrix[tasks.index(row["task"]), tasks.index(row["picks"])] = row["share"]
        image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if not np.isnan(matrix[i, j]):
                    axis.text(j, i, f"{matrix[i, j]:.0%}", ha="center", va="center", color="white" if matrix[i, j] < 0.6 else "black", fontsize=8)
        axis.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
        axis.set_yticks(range(len(tasks)), tasks, fontsize=8)
        axis.set(title=f"level {level}", xlabel="task picked", ylabel="task choosing" if level == levels[0] else None)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of test samples")
    return figure


def adaptability_table(
    roles: dict[str, dict[str, str]], labels: dict[str, dict[str, str]], **aucs_per_run: dict
) -> pd.DataFrame:
    """Figure 3's numbers: per run (a dataset namespace with its own task list), task and model, the AUC;
    the pool models appear as their average and their best per task. ``roles`` and ``labels`` are per run."""
    rows = []
    for run, aucs in aucs_per_run.items():
        run_roles = roles[run]
        tasks = list(dict.fromkeys(task for scores in aucs.values() for task in scores))
        for task in tasks:
            pool = [scores[task] for m, scores in aucs.items() if run_roles.get(m) == POOL and task in scores]
            common = {"run": run, "n_tasks": len(tasks), "task": task}
            rows.append({**common, "model": POOL_AVERAGE, "auc": float(np.mean(pool))})
            rows.append({**common, "model": "best pool model", "auc": float(max(pool))})
            for model, scores in aucs.items():
                if run_roles.get(model) in (BASELINE, EMM):
                    rows.append({**common, "model": labels[run].get(model, model), "auc": scores[task]})
    return pd.DataFrame(rows)


def plot_adaptability(table: pd.DataFrame) -> Figure:
    """Figure 3: a row of panels per run, one panel per task, a bar per model. Each panel has its own
    AUC range: tasks differ in AUC far more than models do on one task."""
    runs = list(dict.fromkeys(table["run"]))
    n_columns = int(table.groupby("run")["task"].nunique().max())
    figure, axes = plt.subplots(len(runs), n_columns, figsize=(3.4 * n_columns, 3.2 * len(runs)), squeeze=False)
    models = list(dict.fromkeys(table["model"]))
    colours = {model: {"EMM": "black", "EMM+": "dimgray"}.get(model, f"C{i}") for i, model in enumerate(models)}
    for row_axes, run in zip(axes, runs):
        part = table[table["run"] == run]
        tasks = list(dict.fromkeys(part["task"]))
        for axis in row_axes[len(tasks):]:
            axis.set_axis_off()
        for axis, task in zip(row_axes, tasks):
            scores = part[part["task"] == task]
            axis.bar(range(len(scores)), scores["auc"], color=[colours[m] for m in scores["model"]])
            low, high = scores["auc"].min(), scores["auc"].max()
            margin = max(high - low, 1e-4)
            axis.set_ylim(low - 0.6 * margin, high + 0.3 * margin)
            axis.set_xticks(range(len(scores)), scores["model"], rotation=45, ha="right", fontsize=7)
            axis.set_title(f"{run} ({len(tasks)} tasks): {task}", fontsize=9)
            axis.tick_params(axis="y", labelsize=7)
        row_axes[0].set_ylabel("test AUC")
    figure.tight_layout()
    return figure

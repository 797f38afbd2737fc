"""Nodes shared by pipelines that turn persisted reports into MLflow metrics.

Training nodes write their reports to files; these small nodes log them. With ``--only-missing-outputs``
the costly nodes are skipped (their files exist) while the new MLflow run still receives the metrics.
"""

from __future__ import annotations


def _number(value: float | None) -> float:
    """A report's undefined AUC (null in its JSON file: a task with one class) as MLflow's NaN."""
    return float("nan") if value is None else value


def training_metrics(report: dict) -> dict:
    """Per-epoch loss and validation AUCs as metric histories, plus the kept epoch's figures."""
    metrics = {
        "train_loss": [{"value": loss, "step": epoch} for epoch, loss in enumerate(report["train_loss"])],
        "best_epoch": {"value": report["best_epoch"], "step": 0},
        "train_seconds": {"value": report["seconds"], "step": 0},
    }
    for task in report["best_validation_auc"]:
        metrics[f"validation_auc.{task}"] = [
            {"value": _number(aucs[task]), "step": epoch} for epoch, aucs in enumerate(report["validation_auc"])
        ]
        metrics[f"best_validation_auc.{task}"] = {"value": _number(report["best_validation_auc"][task]), "step": 0}
    for name, count in report.get("parameters", {}).items():
        metrics[f"parameters.{name}"] = {"value": count, "step": 0}
    return metrics

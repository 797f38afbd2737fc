"""Figures of the Census 2-task models on a GPU: training time and test AUC, and inference speed.

Runs the pipeline's own node functions (pool model, MMoE, EMM, EMM+ training; the evaluation's AUC and cost
measures) on ``--device``, outside a Kedro session, so that it needs only torch, pandas, pyarrow,
scikit-learn and kedro's pipeline package on the machine with the GPU. It reads what an earlier
``kedro run --pipelines=census`` wrote: the encoded tables (data/05_model_input/census), the feature schema
(data/04_feature/census) and the decomposed pool (data/06_models/census/components.pt), and the settings of
conf/base/parameters_census.yml. It writes a markdown table (``--out``).

    python scripts/gpu_figures.py --device cuda --out data/08_reporting/census/gpu_figures.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from emm.models.decomposition import Decomposition
from emm.models.training import resolve_device
from emm.pipelines.baselines.nodes import train_baseline
from emm.pipelines.evaluate.nodes import compute_aucs, measure_costs, score_models
from emm.pipelines.fuse.nodes import refine_fused_model, train_fused_model
from emm.pipelines.train_pool.nodes import train_pool_model

ROOT = Path(__file__).resolve().parents[1]


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / name) for name in ("pool_train", "fusion_train", "train", "validation", "test")}


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            if pd.isna(value):
                return ""
            if abs(value) >= 1000:
                return f"{value:,.0f}"
            return f"{value:.1f}" if abs(value) >= 1 else f"{value:.5f}" if abs(value) >= 1e-3 else f"{value:.1e}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--namespace", default="census")
    parser.add_argument("--max-epochs", type=int, default=None, help="override every model's max_epochs")
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args()

    namespace = arguments.namespace
    parameters = yaml.safe_load((ROOT / "conf/base/parameters_census.yml").read_text())[namespace]
    training = {**parameters["training"], "device": arguments.device, "progress_bar": False}
    if arguments.max_epochs is not None:
        training["max_epochs"] = arguments.max_epochs
    device = resolve_device(arguments.device)
    schema = json.loads((ROOT / f"data/04_feature/{namespace}/feature_schema.json").read_text())
    tables = _tables(ROOT / f"data/05_model_input/{namespace}")
    payload = torch.load(ROOT / f"data/06_models/{namespace}/components.pt", map_location="cpu", weights_only=True)
    components = Decomposition.from_payload(payload)
    fuse = {**parameters["fuse"], "training": {**parameters["fuse"].get("training", {})}}
    refine = {**parameters["refine"], "training": {**parameters["refine"].get("training", {})}}
    if arguments.max_epochs is not None:
        fuse["training"]["max_epochs"] = refine["training"]["max_epochs"] = arguments.max_epochs

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device} ({where})", flush=True)
    models, reports, wall = {}, {}, {}

    def timed(name: str, train) -> None:
        started = time.perf_counter()
        models[name], reports[name] = train()
        wall[name] = time.perf_counter() - started
        print(f"{name}: {wall[name]:.1f} s, best epoch {reports[name]['best_epoch']}", flush=True)

    pool_name = "income_large"
    timed(
        pool_name,
        lambda: train_pool_model(
            tables["pool_train"], tables["validation"], schema, parameters["pool"]["models"][pool_name],
            parameters["pool"], training, pool_name,
        ),
    )
    timed(
        "mmoe",
        lambda: train_baseline(
            tables["train"], tables["validation"], schema, parameters["baselines"]["models"]["mmoe"], training, "mmoe"
        ),
    )
    timed(
        "emm",
        lambda: train_fused_model(
            components, tables[fuse.get("training_data", "fusion_train")], tables["validation"], schema, fuse,
            training,
        ),
    )
    timed(
        "emm_plus",
        lambda: refine_fused_model(
            models["emm"], tables[refine["training_data"]], tables["validation"], schema, refine, training
        ),
    )

    test_aucs = compute_aucs(score_models(tables["test"], schema, **models))
    rows = [
        {
            "model": name,
            "device": reports[name]["device"],
            "train s": round(wall[name], 1),
            "train rows/s": int(reports[name]["train_rows_per_second"]),
            "epochs": len(reports[name]["train_loss"]),
            **{f"test AUC {task}": round(auc, 5) for task, auc in test_aucs[name].items()},
        }
        for name in models
    ]
    roles = {pool_name: "pool", "mmoe": "baseline", "emm": "emm", "emm_plus": "emm"}
    costs = measure_costs(
        tables["test"],
        schema,
        {**parameters["evaluate"], "device": arguments.device},
        roles,
        **{f"model__{name}": model for name, model in models.items()},
        **{f"training__{name}": report for name, report in reports.items()},
    )
    columns = ["model", "form", "train_seconds", "rows_per_second", "latency_ms", "max_logit_difference"]
    text = (
        f"# {namespace}: training and inference on {device} ({where}), torch {torch.__version__}\n\n"
        f"`python scripts/gpu_figures.py --device {arguments.device}`"
        + (f" `--max-epochs {arguments.max_epochs}`" if arguments.max_epochs is not None else "")
        + "\n\n## Training (node functions, conf/base settings)\n\n"
        + _markdown(pd.DataFrame(rows))
        + "\n\n## Inference (evaluate.measure_costs)\n\n"
        + _markdown(costs[columns])
        + "\n"
    )
    print(text)
    if arguments.out:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(text)


if __name__ == "__main__":
    main()

"""Pool-model options for one task, on a finished run's catalogued census artifacts (one seed).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/pool_options.py [--namespace census] [--task never_married] [--seed S]
                                                               [--out data/08_reporting/<namespace>/pool_options_<task>.md]

EMM+'s AUC on a task follows the plain average of the task's pool models' logits closely (docs/results.md),
so a better pool is what lifts it. Each option retrains one of the task's pool models with one setting
changed, by the project's loop, settings and seed (the model's own name, so "the same model again"
reproduces the run's model), and is scored alone and in the task's pool average with the run's other
model(s) of the task. Nothing in data/ is written but the report.

Options: the same model again (a control); dropout 0.1 (the pool default before 0.3); the tables encoded
without the piecewise-linear bins (`data_processing.piecewise_linear` removed; the census files are encoded
again in memory), with dropout 0.3 and with 0.1 (the pool model as it was before both); and one more model
of the small shape from its own seed, averaged with all of the run's. The run's pool average without each
of its models is scored too (no training).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from emm.datasets.torch_model import TorchModelDataset
from emm.models.tabular import tabular_data
from emm.models.training import auc, predict
from emm.pipelines.data_processing.nodes import (
    build_feature_schema,
    encode_table,
    fit_encoders,
    split_pool_fusion,
    split_validation_test,
)
from emm.pipelines.train_pool.nodes import train_pool_model
from options_spread import logit, write_table

SCORED = ("validation", "test")


class Option(NamedTuple):
    label: str
    which: str  # the task's model retrained: "small" or "large" by hidden layers
    model: dict = {}  # overrides of the model's settings
    training: dict = {}  # overrides of the training settings
    tables: str = "run"  # "run" | "no bins": encoded without data_processing.piecewise_linear
    joins: bool = False  # a new model of which's shape and its own seed joins all the run's models in the average


OPTIONS = [
    Option("the same model again (control)", "small"),
    Option("dropout 0.1", "small", model={"dropout": 0.1}),
    Option("dropout 0.1", "large", model={"dropout": 0.1}),
    Option("no piecewise-linear bins", "small", tables="no bins"),
    Option("no piecewise-linear bins", "large", tables="no bins"),
    Option("no piecewise-linear bins, dropout 0.1", "small", model={"dropout": 0.1}, tables="no bins"),
    Option("no piecewise-linear bins, dropout 0.1", "large", model={"dropout": 0.1}, tables="no bins"),
    Option("one more model, joining the run's", "small", joins=True),
]


def encoded_without_bins(catalog, namespace: str, data_processing: dict) -> dict:
    """The run's tables and schema again, encoded without the piecewise-linear bins."""
    settings = {key: value for key, value in data_processing.items() if key != "piecewise_linear"}
    raw_train, raw_test = catalog.load(f"{namespace}.raw_train"), catalog.load(f"{namespace}.raw_test")
    encoders = fit_encoders(raw_train, settings)
    train = encode_table(raw_train, encoders)
    validation, test = split_validation_test(encode_table(raw_test, encoders), encoders, settings)
    pool_train, _ = split_pool_fusion(train, encoders, settings)
    return with_model_inputs(
        {"schema": build_feature_schema(encoders, train), "pool_train": pool_train, "validation": validation, "test": test}
    )


def joining_name(first: str, taken) -> str:
    """``first`` with the first suffix _b, _c, ... that names none of the run's models: the name seeds it."""
    return next(f"{first}_{letter}" for letter in "bcdefghijklmnopqrstuvwxyz" if f"{first}_{letter}" not in taken)


def with_model_inputs(tables: dict) -> dict:
    """``tables`` plus ``inputs``: the validation and test tables as model inputs, converted once."""
    return {**tables, "inputs": {split: tabular_data(tables[split], tables["schema"]) for split in SCORED}}


def _require_same_rows(tables: dict, run_tables: dict, task: str) -> None:
    """Averaging logits across encodings needs the same validation and test rows in the same order."""
    for split in SCORED:
        ours, theirs = tables["inputs"][split].labels, run_tables["inputs"][split].labels
        if ours.shape != theirs.shape or not torch.equal(ours, theirs):
            raise ValueError(f"The {split} rows encoded without bins differ from the run's: not averaged ({task})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="census")
    parser.add_argument("--seed", type=int, default=None, help="training.seed of the run in data/ (default: conf's)")
    parser.add_argument("--task", default="never_married")
    parser.add_argument("--out", default=None, help="default: data/08_reporting/<namespace>/pool_options_<task>.md")
    arguments = parser.parse_args()
    namespace, task = arguments.namespace, arguments.task

    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd()) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params[namespace]
        training = {**params["training"], "progress_bar": False}
        if arguments.seed is not None:
            training["seed"] = arguments.seed
        run_tables = with_model_inputs(
            {
                "schema": catalog.load(f"{namespace}.feature_schema"),
                **{name: catalog.load(f"{namespace}.{name}") for name in ("pool_train", *SCORED)},
            }
        )
        models = {
            name: settings for name, settings in params["pool"]["models"].items() if settings["task"] == task
        }
        if not models:
            raise ValueError(f"No pool model of {namespace} has task {task!r}")
        by_depth = sorted(models, key=lambda name: len(models[name]["hidden_dims"]))
        role = {"small": by_depth[0], "large": by_depth[-1]}

        def scored(tables: dict, logits: dict[str, np.ndarray]) -> dict[str, float]:
            column = [t["name"] for t in tables["schema"]["tasks"]].index(task)
            return {split: auc(tables["inputs"][split].labels[:, column].numpy(), logits[split]) for split in SCORED}

        def model_logits(model, tables: dict) -> dict[str, np.ndarray]:
            return {split: logit(predict(model, tables["inputs"][split])[:, 0]) for split in SCORED}

        run_logits = {
            name: model_logits(TorchModelDataset(f"data/06_models/{namespace}/pool/{name}.pt").load(), run_tables)
            for name in models
        }
        rows = [(f"the run's `{name}`", scored(run_tables, run_logits[name]), None) for name in models]
        run_average = {s: np.mean([run_logits[name][s] for name in models], axis=0) for s in SCORED}
        rows.append(("the run's pool average", scored(run_tables, run_average), None))
        if len(models) > 2:
            for left_out in models:
                kept = [name for name in models if name != left_out]
                average = {s: np.mean([run_logits[name][s] for name in kept], axis=0) for s in SCORED}
                rows.append((f"the run's pool average without `{left_out}`", scored(run_tables, average), None))

        unbinned_tables = None
        for option in OPTIONS:
            name = role[option.which]
            if option.tables == "no bins":
                if unbinned_tables is None:
                    unbinned_tables = encoded_without_bins(catalog, namespace, params["data_processing"])
                    _require_same_rows(unbinned_tables, run_tables, task)
                tables = unbinned_tables
            else:
                tables = run_tables
            model_params = {**copy.deepcopy(models[name]), **option.model}
            trained_name = joining_name(name, models) if option.joins else name  # the name seeds the model
            model, _ = train_pool_model(
                tables["pool_train"], tables["validation"], tables["schema"], model_params, params["pool"],
                {**training, **option.training}, trained_name,
            )
            logits = model_logits(model, tables)
            kept = [other for other in models if option.joins or other != name]
            average = {s: np.mean([logits[s], *[run_logits[other][s] for other in kept]], axis=0) for s in SCORED}
            rows.append((f"{option.label}: `{trained_name}`", scored(tables, logits), scored(run_tables, average)))
            print(f"{rows[-1][0]}: {rows[-1][1]} | pool average {rows[-1][2]}", flush=True)

    table = pd.DataFrame(
        [
            {
                "option": label,
                "validation": alone["validation"],
                "test": alone["test"],
                "pool average validation": average["validation"] if average else np.nan,
                "pool average test": average["test"] if average else np.nan,
            }
            for label, alone, average in rows
        ]
    )
    out = Path(arguments.out or f"data/08_reporting/{namespace}/pool_options_{task}.md")
    title = (
        f"Pool-model options for {task} ({namespace}; training.seed {training['seed']}; each option retrains one "
        "model of the run's pool, or adds one, and is averaged with the run's other model(s) of the task). AUC:"
    )
    print(write_table(table, out, title))


if __name__ == "__main__":
    main()

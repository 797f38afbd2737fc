"""The options measured on the way to EMM+, on a finished run's catalogued census artifacts (one seed).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fusion_options.py [--namespace census] [--seed S]
                                                                 [--out data/08_reporting/census/fusion_options.md]

Needs a run's pool models, components and EMM (`kedro run --pipelines=census`, or the data_processing,
train_pool, decompose and fuse stages). Each option is trained with the project's training loop and settings
(dataset `training`, `fuse.training` for fusion-row training, `refine.training` for fine-tuning, seeded as
the pipeline seeds its models) and scored on the validation and test sets:

- pool average: each task's pool models, their logits averaged (no training);
- EMM + pool average, half each: EMM+'s start with `refine.emm_share: 0.5`, before fine-tuning;
- EMM + pool average with the shares of `refine.emm_share` (chosen on validation; printed): EMM+ as it starts;
- EMM+ from half each: `refine.emm_share: 0.5`, fine-tuned;
- EMM fine-tuned: EMM alone, every weight fine-tuned on all training rows as EMM+ is, without the heads;
- pool heads from scratch: `fuse.model.pool_heads: true`, trained on the fusion rows like EMM (towers
  start at zero, so the model starts as the pool average);
- EMM+ weights averaged with its start (WiSE-FT): each weight the mean of EMM+'s before and after fine-tuning;
- EMM+ with frozen components: `refine.tune_components: false`;
- EMM+ with a 5x larger step size: `refine.training.learning_rate: 1e-4`;
- EMM with MTM's score as eq. (6) prints it, `<Q(w), K(w)>`: `fuse.model.mtm_query: paper`, trained like EMM.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from emm.datasets import ParquetTableDataset
from emm.datasets.torch_model import TorchModelDataset
from emm.models.emm import EMM
from emm.models.tabular import tabular_data
from emm.models.training import TrainingConfig, auc, auc_per_task, predict
from emm.pipelines.fuse.nodes import refine_fused_model, start_shares, train_fused_model
from emm.pipelines.model_training import train_model
from options_spread import logit, write_table


def halfway(start: torch.nn.Module, tuned: torch.nn.Module) -> torch.nn.Module:
    """The model whose weights are the mean of ``start``'s and ``tuned``'s (same architecture)."""
    averaged = copy.deepcopy(tuned)
    first, second = start.state_dict(), tuned.state_dict()
    averaged.load_state_dict(
        {key: (first[key] + value) / 2 if value.is_floating_point() else value for key, value in second.items()}
    )
    return averaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="census")
    parser.add_argument("--seed", type=int, default=None, help="training.seed of the run in data/ (default: conf's)")
    parser.add_argument("--out", default=None, help="default: data/08_reporting/<namespace>/fusion_options.md")
    arguments = parser.parse_args()
    namespace = arguments.namespace
    params = OmegaConf.to_container(OmegaConf.load("conf/base/parameters_census.yml"), resolve=True)[namespace]
    training = {**params["training"], "progress_bar": False}
    if arguments.seed is not None:
        training["seed"] = arguments.seed
    schema = json.loads(Path(f"data/04_feature/{namespace}/feature_schema.json").read_text())
    tables = {name: ParquetTableDataset(f"data/05_model_input/{namespace}/{name}").load() for name in
              ("train", "fusion_train", "validation", "test")}
    data = {name: tabular_data(tables[name], schema) for name in ("validation", "test")}
    components = TorchModelDataset(f"data/06_models/{namespace}/components.pt").load()
    emm = TorchModelDataset(f"data/06_models/{namespace}/emm.pt").load()
    tasks = emm.tasks

    def scores(logits: dict[str, np.ndarray]) -> dict:
        return {
            split: {task: auc(data[split].labels[:, i].numpy(), logits[split][:, i]) for i, task in enumerate(tasks)}
            for split in data
        }

    def model_scores(model: torch.nn.Module) -> dict:
        return {split: auc_per_task(data[split].labels.numpy(), predict(model, data[split]), tasks) for split in data}

    pool_models = {
        name: TorchModelDataset(f"data/06_models/{namespace}/pool/{name}.pt").load() for name in components.models
    }
    pool_average = {
        split: np.stack(
            [
                np.mean([logit(predict(pool_models[name], data[split])[:, 0]) for name in components.models_of(task)], axis=0)
                for task in tasks
            ],
            axis=1,
        )
        for split in data
    }

    rows = {"EMM": model_scores(emm), "pool average": scores(pool_average)}
    refine = params["refine"]
    rows["EMM + pool average, half each (emm_share 0.5, before fine-tuning)"] = model_scores(EMM.with_pool_heads(emm))
    shares = start_shares(emm, data["validation"], refine.get("emm_share", 0.5))
    start = EMM.with_pool_heads(emm, emm_shares=[shares[task] for task in tasks])
    print(f"EMM's start shares: {shares}", flush=True)
    rows["EMM + pool average, shares of refine.emm_share (EMM+ before fine-tuning)"] = model_scores(start)

    def refined(name: str, **overrides) -> torch.nn.Module:
        settings = copy.deepcopy(refine)
        settings["training"] = {**settings.get("training", {}), **overrides.pop("training", {})}
        settings.update(overrides)
        model, _ = refine_fused_model(emm, tables["train"], tables["validation"], schema, settings, training, name)
        return model

    emm_plus = refined("emm_plus")
    rows["EMM+ (default: fine-tuned)"] = model_scores(emm_plus)
    rows["EMM+ from half each (emm_share 0.5), fine-tuned"] = model_scores(refined("emm_plus", emm_share=0.5))
    rows["EMM+ weights averaged with its start (WiSE-FT, alpha 0.5)"] = model_scores(halfway(start, emm_plus))
    rows["EMM+, frozen components"] = model_scores(refined("emm_plus", tune_components=False))
    rows["EMM+, learning rate 1e-4"] = model_scores(refined("emm_plus", training={"learning_rate": 1e-4}))

    tuned_alone = EMM(emm.decomposition, tasks, {**emm.config, "tune_components": True})
    tuned_alone.load_state_dict(emm.state_dict())
    config = TrainingConfig.from_params({**training, **refine.get("training", {}), "validate_start": True})
    tuned_alone, _ = train_model(lambda: tuned_alone, tables["train"], tables["validation"], schema, tasks, config, "emm_plus")
    rows["EMM fine-tuned, no heads"] = model_scores(tuned_alone)

    def fused(**model_settings) -> torch.nn.Module:
        fuse = copy.deepcopy(params["fuse"])
        fuse["model"].update(model_settings)
        model, _ = train_fused_model(components, tables["fusion_train"], tables["validation"], schema, fuse, training)
        return model

    rows["pool heads from scratch on the fusion rows"] = model_scores(fused(pool_heads=True))
    rows["EMM with eq. (6) as printed (mtm_query: paper)"] = model_scores(fused(mtm_query="paper"))

    table = pd.DataFrame(
        [
            {"option": option, **{f"{split} {task}": result[split][task] for split in data for task in tasks}}
            for option, result in rows.items()
        ]
    )
    out = Path(arguments.out or f"data/08_reporting/{namespace}/fusion_options.md")
    title = (
        f"Options on the way to EMM+ ({namespace}; the options trained with training.seed {training['seed']}, "
        "on the pool, components and EMM found in data/). AUC:"
    )
    print(write_table(table, out, title))


if __name__ == "__main__":
    main()

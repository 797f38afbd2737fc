"""Small models and data for unit tests, and the tiny Kedro project the pipeline tests run."""

import shutil
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from emm.models.mlp import SingleTaskMLP, pool_model_spec

# Baselines small enough for the end-to-end runs of the suite: the same nodes, seconds to train.
TINY_BASELINES = {
    "shared_bottom": {"bottom_dims": [16, 8], "tower_dims": [4]},
    "mmoe": {"expert_dims": [16, 8], "tower_dims": [4]},
    "ple": {"expert_dims": [16, 8], "tower_dims": [4]},
    "aitm": {"tower_dims": [16, 8]},
    "adatt": {"expert_dims": [16, 8], "tower_dims": [4]},
}

SIGNATURE = {"categorical": [["colour", 5], ["shape", 4], ["size", 3]], "dense": ["weight", "height"]}


def make_model(name: str, task: str, hidden_dims: list[int], seed: int = 0, **kwargs) -> SingleTaskMLP:
    torch.manual_seed(seed)
    return SingleTaskMLP(pool_model_spec(name, task, SIGNATURE, hidden_dims, embedding_dim=3, dropout=0.1, **kwargs))


def heterogeneous_pool() -> dict[str, SingleTaskMLP]:
    return {
        "a_small": make_model("a_small", "a", [32, 16, 8], seed=1),
        "a_large": make_model("a_large", "a", [64, 32, 16, 8], seed=2),
        "b_small": make_model("b_small", "b", [32, 16, 8], seed=3),
        "b_wide": make_model("b_wide", "b", [48, 32, 16, 8], seed=4),
    }


def warm_up_batch_norm(model, batches: int = 3) -> None:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    from emm.models.tabular import example_batch

    model.train()
    with torch.no_grad():
        for seed in range(batches):
            model(example_batch(SIGNATURE, batch_size=16, seed=seed))
    model.eval()


def tiny_run(base_parameters: dict, namespaces) -> dict:
    """conf/local parameters shrinking every model of ``namespaces``: the same nodes, seconds to run."""
    parameters = {}
    for namespace in namespaces:
        base = base_parameters[namespace]
        parameters[namespace] = {
            "training": {"max_epochs": 2, "batch_size": 512, "progress_bar": False},
            "pool": {
                "models": {
                    name: {"hidden_dims": [32, 16, 8] if name.endswith("small") else [48, 32, 16, 8]}
                    for name in base["pool"]["models"]
                }
            },
            "baselines": {"models": {name: TINY_BASELINES[name] for name in base.get("baselines", {}).get("models", {})}},
            "evaluate": {
                "throughput_rows": 2048,
                "throughput_batch_size": 512,
                "throughput_repeats": 1,
                "latency_calls": 10,
                "latency_warm_up": 2,
            },
        }
    return parameters


def tiny_project(root: Path, project_root: Path, namespaces) -> Path:
    """A Kedro project in ``root`` with the checkout's configuration (not its conf/local) and
    :func:`tiny_run` parameters for ``namespaces`` in conf/local; its data/ and mlflow.db start empty."""
    shutil.copytree(project_root / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    base = OmegaConf.to_container(OmegaConf.load(project_root / "conf" / "base" / "parameters_census.yml"))
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(tiny_run(base, namespaces)))
    shutil.copy(project_root / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    return root

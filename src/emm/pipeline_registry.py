"""Pipelines of the project.

The same modular pipeline (data_processing -> train_pool -> decompose -> fuse -> evaluate) is instantiated
once per dataset, under the dataset's namespace. A dataset is any top-level parameters key with a ``pool``
section, so adding one is configuration: its parameters plus its raw-data entries in the catalog.
Pool models are read from parameters here because each gets its own node: declare them in
``conf/base`` or ``conf/<env>`` parameters files (``KEDRO_ENV`` selects the environment), not ``--params``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from emm.pipelines import data_processing, decompose, evaluate, fuse, train_pool

STAGES = {
    "data_processing": data_processing.create_pipeline,
    "train_pool": train_pool.create_pipeline,
    "decompose": decompose.create_pipeline,
    "fuse": fuse.create_pipeline,
    "evaluate": evaluate.create_pipeline,
}


def project_path() -> Path:
    """The Kedro project being run: the working directory when it is one (as ``kedro`` requires), else
    the checkout this package was installed from."""
    cwd = Path.cwd()
    if (cwd / "pyproject.toml").is_file() and (cwd / settings.CONF_SOURCE).is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]


def project_parameters() -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(project_path() / settings.CONF_SOURCE),
        env=os.environ.get("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )
    return loader["parameters"]


def dataset_namespaces(parameters: dict) -> dict[str, dict]:
    return {name: value for name, value in parameters.items() if isinstance(value, dict) and "pool" in value}


def register_pipelines() -> dict[str, Pipeline]:
    """``__default__`` runs every stage for Census-Income; ``<dataset>`` runs every stage for one dataset;
    ``<stage>`` runs one stage for every dataset."""
    namespaces = dataset_namespaces(project_parameters())
    per_stage: dict[str, list[Pipeline]] = {stage: [] for stage in STAGES}
    pipelines: dict[str, Pipeline] = {}
    for namespace, parameters in namespaces.items():
        pool_models = parameters["pool"]["models"]
        stages = {
            stage: Pipeline(create(pool_models=pool_models), namespace=namespace)
            for stage, create in STAGES.items()
        }
        for stage, stage_pipeline in stages.items():
            per_stage[stage].append(stage_pipeline)
        pipelines[namespace] = sum(stages.values(), Pipeline([]))
    for stage, stage_pipelines in per_stage.items():
        pipelines[stage] = sum(stage_pipelines, Pipeline([]))
    pipelines["__default__"] = pipelines.get("census", Pipeline([]))
    return pipelines

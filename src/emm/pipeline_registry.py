"""Pipelines of the project.

The same modular pipeline (data_processing -> train_pool -> decompose -> fuse -> baselines -> ablations ->
evaluate -> report) is instantiated once per dataset, under the dataset's namespace. A dataset is any
top-level parameters key with a ``pool`` section, so adding one is configuration: its parameters plus its
raw-data entries in the catalog (or ``raw_data: <namespace>`` to read another namespace's raw files, as
the 3- and 4-task Census-Income runs do). Pool models, baselines and ablations are read from parameters
here because each gets its own node: declare them in ``conf/base`` or ``conf/<env>`` parameters files
(``KEDRO_ENV`` selects the environment), not ``--params``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from emm.pipelines import ablations, baselines, data_processing, decompose, evaluate, fuse, report, train_pool
from emm.pipelines.serving.pipeline import create_pipeline as create_serving_pipeline

STAGES = {
    "data_processing": data_processing.create_pipeline,
    "train_pool": train_pool.create_pipeline,
    "decompose": decompose.create_pipeline,
    "fuse": fuse.create_pipeline,
    "baselines": baselines.create_pipeline,
    "ablations": ablations.create_pipeline,
    "evaluate": evaluate.create_pipeline,
    "report": report.create_pipeline,
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


def stage_arguments(parameters: dict) -> dict:
    """What the stage factories need from a dataset's parameters: the models it declares."""
    fuse_model = parameters.get("fuse", {}).get("model", {})
    n_tasks = len(parameters.get("data_processing", {}).get("tasks", []))
    return {
        "streaming": parameters.get("data_processing", {}).get("streaming", False),
        "pool_models": parameters["pool"]["models"],
        "baseline_models": (parameters.get("baselines") or {}).get("models") or {},
        "ablations": parameters.get("ablations") or {},
        "fusion_gates": fuse_model.get("use_mtm", True) and n_tasks > 1,
        "refine": parameters.get("refine") or None,
    }


def _namespaced(create, namespace: str, parameters: dict) -> Pipeline:
    raw = parameters.get("raw_data", namespace)
    inputs = {"raw_train": f"{raw}.raw_train", "raw_test": f"{raw}.raw_test"} if raw != namespace else None
    stage = create(**stage_arguments(parameters))
    if inputs:
        inputs = {name: dataset for name, dataset in inputs.items() if name in stage.inputs()}
    return Pipeline(stage, namespace=namespace, inputs=inputs or None)


def serving_pipeline(namespace: str, parameters: dict) -> Pipeline:
    """``<dataset>_serving``: the dataset's fused model logged as an MLflow model (docs/serving.md)."""
    settings = parameters.get("serving") or {}
    return create_serving_pipeline(
        namespace,
        fused_model=settings.get("fused_model", "emm_plus" if parameters.get("refine") else "emm"),
        input_example_rows=settings.get("input_example_rows", 5),
        raw_data=parameters.get("raw_data"),
        inference_form=settings.get("inference_form", True),
    )


def register_pipelines() -> dict[str, Pipeline]:
    """``__default__`` runs the whole Census-Income comparison: every stage of every dataset not marked
    ``default_run: false`` (Ali-CCP and AliExpress are), then Figure 3;
    ``<dataset>`` runs every stage of one dataset; ``<stage>`` runs one stage for every dataset
    (``report`` also draws Figure 3).

    ``<dataset>_serving`` logs and registers the dataset's fused model, for datasets read in memory (not
    ``streaming``). It is a kedro-mlflow PipelineML, logged only when run alone: it is in no other pipeline,
    ``__default__`` included (docs/serving.md)."""
    parameters = project_parameters()
    namespaces = dataset_namespaces(parameters)
    per_stage: dict[str, list[Pipeline]] = {stage: [] for stage in STAGES}
    pipelines: dict[str, Pipeline] = {}
    for namespace, dataset_parameters in namespaces.items():
        stages = {stage: _namespaced(create, namespace, dataset_parameters) for stage, create in STAGES.items()}
        for stage, stage_pipeline in stages.items():
            per_stage[stage].append(stage_pipeline)
        pipelines[namespace] = sum(stages.values(), Pipeline([]))
        if not stage_arguments(dataset_parameters)["streaming"]:
            pipelines[f"{namespace}_serving"] = serving_pipeline(namespace, dataset_parameters)
    for stage, stage_pipelines in per_stage.items():
        pipelines[stage] = sum(stage_pipelines, Pipeline([]))
    runs = (parameters.get("adaptability") or {}).get("runs") or []
    unknown = [run for run in runs if run not in namespaces]
    if unknown:
        raise ValueError(f"adaptability.runs names {unknown}, which are not datasets; datasets: {sorted(namespaces)}")
    if runs:
        adaptability = report.create_adaptability_pipeline(
            {run: stage_arguments(namespaces[run]) for run in runs}
        )
        pipelines["adaptability"] = adaptability
        pipelines["report"] = pipelines["report"] + adaptability
    default = [namespace for namespace, values in namespaces.items() if values.get("default_run", True)]
    pipelines["__default__"] = sum(
        (pipelines[namespace] for namespace in default), pipelines.get("adaptability", Pipeline([]))
    )
    return pipelines

"""Pipelines built from parameters: which nodes exist and which datasets they read."""

import pytest

from emm.pipeline_registry import STAGES, _namespaced, stage_arguments
from emm.pipelines import ablations, baselines
from emm.pipelines.inventory import model_inventory

PARAMETERS = {
    "data_processing": {"tasks": [{"name": "a"}, {"name": "b"}]},
    "pool": {"models": {"a_small": {"task": "a"}, "b_small": {"task": "b"}}},
    "fuse": {"model": {"use_mtm": True}},
    "baselines": {"models": {"mmoe": {"kind": "mmoe"}, "aitm": {"kind": "aitm"}}},
    "ablations": {
        "scratch": {"label": "baseline", "model": {"use_trained_components": False}, "training_data": "train"},
        "frozen": {"label": "baseline+p", "model": {"use_mtm": False}},
    },
}


def test_one_training_node_per_baseline_on_the_whole_training_file():
    pipeline = baselines.create_pipeline(**stage_arguments(PARAMETERS))
    training = [n for n in pipeline.nodes if n.name.startswith("train_baseline_")]
    assert sorted(n.name for n in training) == ["train_baseline_aitm", "train_baseline_mmoe"]
    assert all("train" in n.inputs and "pool_train" not in n.inputs for n in training)


def test_ablation_variants_read_the_training_data_they_declare():
    pipeline = ablations.create_pipeline(**stage_arguments(PARAMETERS))
    inputs = {n.name: n.inputs for n in pipeline.nodes if n.name.startswith("train_ablation_")}
    assert "train" in inputs["train_ablation_scratch"] and "fusion_train" not in inputs["train_ablation_scratch"]
    assert "fusion_train" in inputs["train_ablation_frozen"]
    assert "params:ablations.frozen" in inputs["train_ablation_frozen"]


def test_unknown_ablation_training_data_is_refused():
    with pytest.raises(ValueError, match="Ablation 'x': training_data must be one of"):
        ablations.create_pipeline(ablations={"x": {"training_data": "test"}})


def test_a_namespace_reading_another_namespaces_raw_files():
    pipeline = _namespaced(STAGES["data_processing"], "census_3tasks", {**PARAMETERS, "raw_data": "census"})
    assert {"census.raw_train", "census.raw_test"} <= pipeline.inputs()
    assert "census_3tasks.train" in pipeline.all_outputs()
    own = _namespaced(STAGES["data_processing"], "census", PARAMETERS)
    assert {"census.raw_train", "census.raw_test"} <= own.inputs()


def test_evaluation_scores_every_declared_model():
    pipeline = _namespaced(STAGES["evaluate"], "census", PARAMETERS)
    score = next(n for n in pipeline.nodes if n.name == "census.score_models")
    assert {"census.pool_model_a_small", "census.baseline_mmoe", "census.ablation_frozen", "census.emm_model"} <= set(
        score.inputs
    )


def test_table_ii_and_fusion_reports_exist_only_when_they_can():
    report = _namespaced(STAGES["report"], "census", PARAMETERS)
    assert {"census.table_2", "census.fusion_choices"} <= report.all_outputs()
    plain = {**PARAMETERS, "ablations": {}, "fuse": {"model": {"use_mtm": False}}}
    report = _namespaced(STAGES["report"], "census", plain)
    assert not {"census.table_2", "census.fusion_choices"} & report.all_outputs()


def test_models_need_distinct_names_across_roles():
    with pytest.raises(ValueError, match="Two models are named 'mmoe'"):
        model_inventory({"mmoe": {"task": "a"}}, {"mmoe": {"kind": "mmoe"}}, {})


def test_streaming_datasets_get_the_streaming_preprocessing_with_the_same_outputs():
    streaming = _namespaced(
        STAGES["data_processing"], "ali_ccp", {**PARAMETERS, "data_processing": {**PARAMETERS["data_processing"], "streaming": True}}
    )
    in_memory = _namespaced(STAGES["data_processing"], "census", PARAMETERS)
    tables = {"train", "pool_train", "fusion_train", "validation", "test", "encoders", "feature_schema"}
    assert {f"ali_ccp.{t}" for t in tables} <= streaming.all_outputs()
    assert {f"census.{t}" for t in tables} <= in_memory.all_outputs()
    assert "ali_ccp.split_encoded_rows" in {n.name for n in streaming.nodes}
    assert "census.split_encoded_rows" not in {n.name for n in in_memory.nodes}


def test_the_default_run_is_census_and_every_dataset_has_its_pipeline():
    from emm.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    default_namespaces = {n.namespace.split(".")[0] for n in pipelines["__default__"].nodes if n.namespace}
    assert default_namespaces == {"census", "census_3tasks", "census_4tasks", "adaptability"}
    for dataset in ("ali_ccp", "aliexpress", "ali_ccp_synthetic", "aliexpress_synthetic"):
        nodes = {n.name for n in pipelines[dataset].nodes}
        assert {f"{dataset}.fit_encoders", f"{dataset}.train_fused_model", f"{dataset}.score_models"} <= nodes

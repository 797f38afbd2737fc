from kedro.pipeline import Pipeline, node

from emm.pipelines.decompose.nodes import decompose_pool


def create_pipeline(pool_models: dict[str, dict] | None = None, **kwargs) -> Pipeline:
    inputs = {"decompose_params": "params:decompose", "pool_params": "params:pool", "feature_schema": "feature_schema"}
    inputs.update({name: f"pool_model_{name}" for name in pool_models or {}})
    return Pipeline(
        [node(decompose_pool, inputs, ["components", "decomposition_report"], name="decompose_pool")]
    )

from kedro.pipeline import Pipeline, node

from emm.pipelines.fuse.nodes import refine_fused_model, train_fused_model, training_data
from emm.pipelines.tracking import training_metrics


def create_pipeline(refine: dict | None = None, **kwargs) -> Pipeline:
    """EMM over the decomposed pool; with a ``refine`` section in the dataset's parameters, EMM+ from it."""
    nodes = [
        node(
            train_fused_model,
            ["components", "fusion_train", "validation", "feature_schema", "params:fuse", "params:training"],
            ["emm_model", "emm_training"],
            name="train_fused_model",
        ),
        node(training_metrics, "emm_training", "emm_metrics", name="log_emm_metrics"),
    ]
    if refine:
        data = training_data(refine.get("training_data", "train"), "refine.training_data")
        nodes += [
            node(
                refine_fused_model,
                ["emm_model", data, "validation", "feature_schema", "params:refine", "params:training"],
                ["emm_plus_model", "emm_plus_training"],
                name="refine_fused_model",
            ),
            node(training_metrics, "emm_plus_training", "emm_plus_metrics", name="log_emm_plus_metrics"),
        ]
    return Pipeline(nodes)


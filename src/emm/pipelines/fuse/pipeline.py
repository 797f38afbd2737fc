from kedro.pipeline import Pipeline, node

from emm.pipelines.fuse.nodes import train_fused_model
from emm.pipelines.tracking import training_metrics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_fused_model,
                ["components", "fusion_train", "validation", "feature_schema", "params:fuse", "params:training"],
                ["emm_model", "emm_training"],
                name="train_fused_model",
            ),
            node(training_metrics, "emm_training", "emm_metrics", name="log_emm_metrics"),
        ]
    )

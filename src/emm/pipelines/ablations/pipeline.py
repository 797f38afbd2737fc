from kedro.pipeline import Pipeline, node

from emm.pipelines import bind
from emm.pipelines.fuse.nodes import train_fused_model, training_data
from emm.pipelines.tracking import training_metrics


def create_pipeline(ablations: dict[str, dict] | None = None, **kwargs) -> Pipeline:
    """One node per variant under ``ablations``: EMM's own node with the variant's switches. A variant
    trains on ``training_data``: ``fusion_train`` (the rows held out of the pool, as EMM) or ``train``
    (the whole training file, for variants that learn their components from scratch)."""
    nodes = []
    for name, variant in (ablations or {}).items():
        data = training_data(variant.get("training_data", "fusion_train"), f"Ablation {name!r}: training_data")
        train = bind(train_fused_model, name=f"ablation_{name}")
        nodes += [
            node(
                train,
                {
                    "components": "components",
                    "train": data,
                    "validation": "validation",
                    "feature_schema": "feature_schema",
                    "fuse_params": "params:fuse",
                    "training_params": "params:training",
                    "variant": f"params:ablations.{name}",
                },
                [f"ablation_{name}", f"ablation_training_{name}"],
                name=f"train_ablation_{name}",
            ),
            node(training_metrics, f"ablation_training_{name}", f"ablation_metrics_{name}", name=f"log_ablation_metrics_{name}"),
        ]
    return Pipeline(nodes)

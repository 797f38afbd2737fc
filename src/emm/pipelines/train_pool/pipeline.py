from kedro.pipeline import Pipeline, node

from emm.pipelines import bind
from emm.pipelines.tracking import training_metrics
from emm.pipelines.train_pool.nodes import train_pool_model


def create_pipeline(pool_models: dict[str, dict] | None = None, **kwargs) -> Pipeline:
    """One training node per pool model declared in parameters; a model marked ``pretrained: true`` was
    trained elsewhere and placed in the pool folder, so it gets no node (see docs/pool.md)."""
    nodes = []
    for name, model_params in (pool_models or {}).items():
        if model_params.get("pretrained", False):
            continue
        train = bind(train_pool_model, name=name)
        nodes += [
            node(
                train,
                [
                    "pool_train",
                    "validation",
                    "feature_schema",
                    f"params:pool.models.{name}",
                    "params:pool",
                    "params:training",
                ],
                [f"pool_model_{name}", f"pool_training_{name}"],
                name=f"train_pool_model_{name}",
            ),
            node(
                training_metrics,
                f"pool_training_{name}",
                f"pool_metrics_{name}",
                name=f"log_pool_metrics_{name}",
            ),
        ]
    return Pipeline(nodes)

from kedro.pipeline import Pipeline, node

from emm.pipelines import bind
from emm.pipelines.baselines.nodes import train_baseline
from emm.pipelines.tracking import training_metrics


def create_pipeline(baseline_models: dict[str, dict] | None = None, **kwargs) -> Pipeline:
    """One training node per baseline declared under ``baselines.models``. Baselines train on the whole
    training file: the rows the pool and the fusion of EMM share between them."""
    nodes = []
    for name in baseline_models or {}:
        train = bind(train_baseline, name=name)
        nodes += [
            node(
                train,
                ["train", "validation", "feature_schema", f"params:baselines.models.{name}", "params:training"],
                [f"baseline_{name}", f"baseline_training_{name}"],
                name=f"train_baseline_{name}",
            ),
            node(training_metrics, f"baseline_training_{name}", f"baseline_metrics_{name}", name=f"log_baseline_metrics_{name}"),
        ]
    return Pipeline(nodes)

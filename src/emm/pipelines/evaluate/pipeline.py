from kedro.pipeline import Pipeline, node

from emm.pipelines import bind

from emm.pipelines.evaluate.nodes import (
    MODEL_INPUT,
    TRAINING_INPUT,
    compute_aucs,
    cost_metrics,
    gate_statistics,
    measure_costs,
    score_models,
    test_metrics,
)
from emm.pipelines.inventory import model_inventory


def create_pipeline(
    pool_models: dict | None = None,
    baseline_models: dict | None = None,
    ablations: dict | None = None,
    refine: dict | None = None,
    **kwargs,
) -> Pipeline:
    """Scores every model the dataset's parameters declare: pool, EMM (and EMM+), baselines and ablations."""
    inventory = model_inventory(pool_models, baseline_models, ablations, refine)
    score_inputs = {"test": "test", "feature_schema": "feature_schema"}
    score_inputs.update({name: entry.dataset for name, entry in inventory.items()})
    cost_inputs = {"test": "test", "feature_schema": "feature_schema", "evaluate_params": "params:evaluate"}
    cost_inputs.update({f"{MODEL_INPUT}{name}": entry.dataset for name, entry in inventory.items()})
    cost_inputs.update(
        {f"{TRAINING_INPUT}{name}": entry.training_report for name, entry in inventory.items() if entry.training_report}
    )
    costs = bind(measure_costs, roles={name: entry.role for name, entry in inventory.items()})
    return Pipeline(
        [
            node(score_models, score_inputs, "test_predictions", name="score_models"),
            node(compute_aucs, "test_predictions", "test_aucs", name="compute_aucs"),
            node(test_metrics, "test_aucs", "test_metrics", name="log_test_metrics"),
            node(gate_statistics, ["emm_model", "test", "feature_schema"], "gate_statistics", name="gate_statistics"),
            node(costs, cost_inputs, "model_costs", name="measure_costs"),
            node(cost_metrics, "model_costs", "cost_metrics", name="log_cost_metrics"),
        ]
    )

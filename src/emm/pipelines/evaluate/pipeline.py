from kedro.pipeline import Pipeline, node

from emm.pipelines.evaluate.nodes import (
    compute_aucs,
    gate_statistics,
    plot_gate_statistics,
    plot_roc_curves,
    results_markdown,
    results_table,
    score_models,
    test_metrics,
)


def create_pipeline(pool_models: dict[str, dict] | None = None, **kwargs) -> Pipeline:
    score_inputs = {"test": "test", "feature_schema": "feature_schema", "emm_model": "emm_model"}
    score_inputs.update({name: f"pool_model_{name}" for name in pool_models or {}})
    return Pipeline(
        [
            node(score_models, score_inputs, "test_predictions", name="score_models"),
            node(compute_aucs, "test_predictions", "test_aucs", name="compute_aucs"),
            node(results_table, ["test_aucs", "feature_schema"], "results_table", name="results_table"),
            node(results_markdown, ["results_table", "feature_schema"], "results_markdown", name="results_markdown"),
            node(test_metrics, "test_aucs", "test_metrics", name="log_test_metrics"),
            node(plot_roc_curves, ["test_predictions", "feature_schema"], "roc_curves", name="plot_roc_curves"),
            node(gate_statistics, ["emm_model", "test", "feature_schema"], "gate_statistics", name="gate_statistics"),
            node(plot_gate_statistics, "gate_statistics", "gate_figure", name="plot_gate_statistics"),
        ]
    )

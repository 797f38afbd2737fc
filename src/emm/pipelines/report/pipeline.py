from kedro.pipeline import Pipeline, node

from emm.pipelines import bind
from emm.pipelines.inventory import model_inventory
from emm.pipelines.report.nodes import (
    ablation_table,
    adaptability_table,
    auc_markdown,
    comparison_table,
    cost_markdown,
    fusion_choices,
    fusion_choices_markdown,
    plot_adaptability,
    plot_fusion_choices,
    plot_gate_statistics,
    plot_roc_curves,
)


def create_pipeline(
    pool_models: dict | None = None,
    baseline_models: dict | None = None,
    ablations: dict | None = None,
    fusion_gates: bool = True,
    refine: dict | None = None,
    **kwargs,
) -> Pipeline:
    """A dataset's tables and figures, for the models its parameters declare; ``fusion_gates``: whether
    EMM has fusion gates to report on (MTM on, two tasks or more)."""
    inventory = model_inventory(pool_models, baseline_models, ablations, refine)
    names = {
        "labels": {name: entry.label for name, entry in inventory.items()},
        "roles": {name: entry.role for name, entry in inventory.items()},
    }
    nodes = [
        node(bind(comparison_table, **names), ["test_aucs", "feature_schema"], "table_1", name="table_1"),
        node(auc_markdown, ["table_1", "feature_schema"], "table_1_markdown", name="table_1_markdown"),
        node(bind(cost_markdown, labels=names["labels"]), "model_costs", "cost_table", name="cost_table"),
        node(bind(plot_roc_curves, **names), ["test_predictions", "feature_schema"], "roc_curves_figure", name="plot_roc_curves"),
        node(plot_gate_statistics, "gate_statistics", "gate_weights_figure", name="plot_gate_statistics"),
    ]
    if ablations:
        nodes += [
            node(bind(ablation_table, **names), ["test_aucs", "feature_schema"], "table_2", name="table_2"),
            node(auc_markdown, ["table_2", "feature_schema"], "table_2_markdown", name="table_2_markdown"),
        ]
    if fusion_gates:
        nodes += [
            node(fusion_choices, "gate_statistics", "fusion_choices", name="fusion_choices"),
            node(fusion_choices_markdown, "fusion_choices", "fusion_choices_markdown", name="fusion_choices_markdown"),
            node(plot_fusion_choices, "fusion_choices", "fusion_choices_figure", name="plot_fusion_choices"),
        ]
    return Pipeline(nodes)


def create_adaptability_pipeline(runs: dict[str, dict]) -> Pipeline:
    """Figure 3 across runs: ``runs`` maps a dataset namespace to its stage arguments (``pool_models``,
    ``baseline_models``, ``ablations``, ``refine``)."""
    inventories = {
        run: model_inventory(
            arguments["pool_models"], arguments["baseline_models"], arguments["ablations"], arguments.get("refine")
        )
        for run, arguments in runs.items()
    }
    roles = {run: {name: entry.role for name, entry in inventory.items()} for run, inventory in inventories.items()}
    labels = {run: {name: entry.label for name, entry in inventory.items()} for run, inventory in inventories.items()}
    return Pipeline(
        [
            node(
                bind(adaptability_table, roles=roles, labels=labels),
                {run: f"{run}_test_aucs" for run in runs},
                "table",
                name="table",
            ),
            node(plot_adaptability, "table", "figure_3", name="plot_figure_3"),
        ],
        namespace="adaptability",
        inputs={f"{run}_test_aucs": f"{run}.test_aucs" for run in runs},
    )

"""Report nodes on hand-made AUCs: tables, marks, gains, fusion choices, Figure 3's numbers."""

import pytest

from emm.pipelines.report.nodes import (
    ablation_table,
    adaptability_table,
    auc_markdown,
    comparison_table,
    fusion_choices,
)

SCHEMA = {"tasks": [{"name": "a"}, {"name": "b"}]}
AUCS = {
    "a_small": {"a": 0.80},
    "a_large": {"a": 0.84},
    "b_small": {"b": 0.90},
    "mmoe": {"a": 0.83, "b": 0.93},
    "ablation_scratch": {"a": 0.70, "b": 0.88},
    "emm": {"a": 0.85, "b": 0.92},
}
ROLES = {"a_small": "pool", "a_large": "pool", "b_small": "pool", "mmoe": "baseline", "ablation_scratch": "ablation", "emm": "emm"}
LABELS = {**{name: name for name in AUCS}, "ablation_scratch": "baseline", "emm": "EMM"}


def test_table_1_lists_pool_average_baselines_and_emm_with_gains():
    table = comparison_table(AUCS, SCHEMA, LABELS, ROLES)
    assert list(table["model"]) == ["a_small", "a_large", "b_small", "pool average", "mmoe", "emm"]
    average = table.set_index("model").loc["pool average"]
    assert average["auc_a"] == pytest.approx(0.82) and average["auc_b"] == pytest.approx(0.90)
    emm = table.set_index("model").loc["emm"]
    assert emm["gain_a"] == pytest.approx(0.03) and emm["gain_b"] == pytest.approx(0.02)


def test_markdown_marks_the_best_in_bold_and_the_second_in_italics():
    text = auc_markdown(comparison_table(AUCS, SCHEMA, LABELS, ROLES), SCHEMA)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert "**0.85000**" in rows["EMM"] and "*0.92000*" in rows["EMM"]
    assert "*0.84000*" in rows["a_large"] and "**0.93000**" in rows["mmoe"]
    assert "**" not in rows["pool average"] and "+0.03000" in rows["EMM"]


def test_table_2_gains_are_against_the_first_variant():
    table = ablation_table(AUCS, SCHEMA, LABELS, ROLES)
    assert list(table["label"]) == ["baseline", "EMM"]
    assert table["gain_a"].tolist() == pytest.approx([0.0, 0.15])


def test_table_2_needs_a_variant():
    with pytest.raises(ValueError, match="at least one ablation"):
        ablation_table({"emm": AUCS["emm"]}, SCHEMA, LABELS, {"emm": "emm"})


def test_fusion_choices_leave_out_the_own_task_and_refuse_a_model_without_gates():
    statistics = {
        "levels": [
            {"level": 1, "tasks": {"a": {"choice_share": {"a": 0.0, "b": 0.7, "c": 0.3}}, "b": {"choice_share": {"a": 1.0, "b": 0.0, "c": 0.0}}}}
        ]
    }
    choices = fusion_choices(statistics)
    assert set(zip(choices["task"], choices["picks"])) == {("a", "b"), ("a", "c"), ("b", "a"), ("b", "c")}
    with pytest.raises(ValueError, match="no fusion gates"):
        fusion_choices({"levels": [{"level": 1, "tasks": {"a": {"task_gate": {}}}}]})


def test_figure_3_numbers_summarise_the_pool_per_task():
    table = adaptability_table({"run": ROLES}, {"run": LABELS}, run=AUCS)
    a = table[table["task"] == "a"].set_index("model")["auc"]
    assert a["pool average"] == pytest.approx(0.82) and a["best pool model"] == pytest.approx(0.84)
    assert a["EMM"] == 0.85 and a["mmoe"] == 0.83 and "ablation_scratch" not in a
    assert set(table["n_tasks"]) == {2}


def test_figure_3_keeps_two_fused_models_apart_by_label():
    aucs = {**AUCS, "emm_plus": {"a": 0.86, "b": 0.94}}
    table = adaptability_table({"run": {**ROLES, "emm_plus": "emm"}}, {"run": {**LABELS, "emm_plus": "EMM+"}}, run=aucs)
    b = table[table["task"] == "b"].set_index("model")["auc"]
    assert b["EMM"] == 0.92 and b["EMM+"] == 0.94

"""The inference form of a fused model (emm.models.inference) against the eager model, and the cost table."""

import os
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

from emm.models.decomposition import decompose
from emm.models.emm import EMM
from emm.models import inference
from emm.models.inference import fold_layers, inference_form
from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import example_batch
from emm.pipelines.evaluate.nodes import cost_metrics, measure_costs
from emm.pipelines.report.nodes import cost_markdown

from helpers import SIGNATURE, heterogeneous_pool, make_model, warm_up_batch_norm

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def _perturb(model: EMM, seed: int = 0, scale: float = 0.5) -> EMM:
    """Trained-looking weights: every trainable parameter moved off its initial value (identity adapters and
    value maps, zero biases), by noise that keeps the layers' gains near one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                fan_in = parameter.shape[-1] if parameter.dim() > 1 else 1
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale / fan_in**0.5)
        for tower in model.towers:  # logits that vary by tenths to units, as a trained model's
            tower[-1].weight.mul_(4)
    return model


def _pool(tasks=("a", "b"), same_shape=False, **kwargs) -> dict[str, SingleTaskMLP]:
    if tasks == ("a", "b") and not same_shape and not kwargs:
        pool = heterogeneous_pool()
    else:
        pool = {}
        for t, task in enumerate(tasks):
            pool[f"{task}_small"] = make_model(f"{task}_small", task, [32, 16, 8], seed=2 * t + 1, **kwargs)
            dims = [32, 16, 8] if same_shape else [64, 32, 16, 8]
            pool[f"{task}_large"] = make_model(f"{task}_large", task, dims, seed=2 * t + 2, **kwargs)
    for model in pool.values():
        warm_up_batch_norm(model)
    return pool


def _calibrate_batch_norm(model: EMM, batches: int = 4) -> EMM:
    """Running statistics of every BatchNorm (frozen components' included) on what reaches it inside the
    fused model, so that no level's features fade to constants: outputs that vary with the rows."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm1d)]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches
        norm.train()
    with torch.no_grad():
        for seed in range(batches):
            model(example_batch(SIGNATURE, batch_size=64, seed=100 + seed))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def _emm(pool=None, tasks=("a", "b"), max_levels=3, **config) -> EMM:
    pool = pool or _pool(tasks)
    model = EMM(decompose(pool, max_levels=max_levels), list(tasks), config)
    return _calibrate_batch_norm(_perturb(model))


def assert_same_logits(model: EMM, batch_sizes=(1, 5, 64), **form_options) -> None:
    """The form's logits are the eager model's, on batches of every size, by both of the form's paths:
    batched matmuls, and the ops it takes for a few rows with several threads (``_few_rows``)."""
    form = inference_form(model, **form_options)
    for seed, batch_size in enumerate(batch_sizes):
        batch = example_batch(SIGNATURE, batch_size=batch_size, seed=seed + 10)
        with torch.inference_mode():
            expected = model(batch)
            for few_rows in (False, True):
                with mock.patch.object(inference, "_few_rows", lambda rows, few_rows=few_rows: few_rows):
                    actual = form(batch)
                assert actual.shape == expected.shape == (batch_size, len(model.tasks))
                torch.testing.assert_close(actual, expected, **TOLERANCE)
        if batch_size > 1:  # a comparison that could fail: the logits vary with the rows, by far more than 1e-5
            assert expected.std(0).min() > 2e-3


CONFIGURATIONS = {
    "mtm": {},
    "adapters": {"component_adapters": True},
    "no_mtm": {"use_mtm": False},
    "no_mtm_adapters": {"use_mtm": False, "component_adapters": True},
    "paper_query": {"mtm_query": "paper"},
    "paper_query_adapters": {"mtm_query": "paper", "component_adapters": True},
    "tower": {"tower_dims": [8, 4], "component_adapters": True},
    "pool_heads": {"pool_heads": True, "component_adapters": True},
    "pool_heads_no_mtm": {"pool_heads": True, "use_mtm": False},
    "pool_heads_tuned": {"pool_heads": True, "tune_components": True, "mtm_query": "paper"},
}


@pytest.mark.parametrize("config", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_form_predicts_as_the_eager_model_on_a_heterogeneous_pool(config):
    assert_same_logits(_emm(**config))


THREE_TASK_CONFIGURATIONS = {"mtm": {}, "adapters": {"component_adapters": True}, "paper_query": {"mtm_query": "paper"}}


@pytest.mark.parametrize("config", THREE_TASK_CONFIGURATIONS.values(), ids=THREE_TASK_CONFIGURATIONS.keys())
def test_form_predicts_as_the_eager_model_with_three_tasks(config):
    tasks = ("a", "b", "c")
    assert_same_logits(_emm(_pool(tasks), tasks, **config))


def test_form_predicts_as_the_eager_model_of_emm_plus():
    # EMM+ fine-tunes every weight, the trained components' included: moved less than a fresh layer
    fused = _emm(component_adapters=True)
    assert_same_logits(_calibrate_batch_norm(_perturb(EMM.with_pool_heads(fused), seed=1, scale=0.1)))
    tasks = ("a", "b", "c")
    fused = _emm(_pool(tasks), tasks, max_levels=2)
    assert_same_logits(_calibrate_batch_norm(_perturb(EMM.with_pool_heads(fused), seed=2, scale=0.1)))


def test_form_predicts_as_the_eager_model_on_a_same_shape_pool_and_with_one_task():
    assert_same_logits(_emm(_pool(same_shape=True), component_adapters=True))
    pool = _pool(("a",))
    assert_same_logits(_emm(pool, ("a",), component_adapters=True))


@pytest.mark.parametrize("config", [{}, {"component_adapters": True, "mtm_query": "paper"}], ids=["mtm", "adapters"])
def test_form_predicts_as_the_eager_model_when_tasks_have_different_numbers_of_models(config):
    pool = _pool()
    pool["a_third"] = make_model("a_third", "a", [48, 16, 8], seed=9)
    warm_up_batch_norm(pool["a_third"])
    assert_same_logits(_emm(pool, **config))
    tasks = ("a", "b", "c")
    pool = _pool(tasks)
    del pool["b_large"]
    assert_same_logits(_emm(pool, tasks, **config))
    # The first group of level 1 leaves task b out: h_b's first term comes from the group after it
    pool = {name: pool[name] for name in ("a_large", "a_small", "b_small", "c_small")}
    model = _emm(pool, tasks, **config)
    assert not inference_form(model).plans[0].groups[0].one_per_task  # what this pool is for
    assert_same_logits(model)


def test_form_predicts_as_the_eager_model_with_unfrozen_fine_tuned_components():
    model = _emm(use_trained_components=False, component_adapters=True)
    model.train()
    with torch.no_grad():  # the components' BatchNorm statistics move as they do in training
        for seed in range(3):
            model(example_batch(SIGNATURE, batch_size=32, seed=seed))
    model.eval()
    assert not model.frozen
    assert_same_logits(model)


@pytest.mark.parametrize("activation", ["Tanh", "GELU", "LeakyReLU", "SiLU", "Sigmoid"])
def test_form_predicts_as_the_eager_model_over_other_activations(activation):
    # MTM's value map then ends in a clamp or in nothing, and Tanh/Sigmoid pools take their own paths.
    model = _emm(_pool(activation=activation), component_adapters=True, mtm_query="paper")
    assert_same_logits(model)


@pytest.mark.parametrize("query", ["own", "paper"])
def test_form_predicts_as_the_eager_model_with_other_mtm_activations(query):
    model = _emm(mtm_query=query)
    for level in model.levels:
        for merge in level.merges:
            merge.query[1], merge.key[1] = torch.nn.Sigmoid(), torch.nn.Identity()
    assert_same_logits(model)


@pytest.mark.skipif(not os.environ.get("EMM_TEST_COMPILE"), reason="torch.compile takes a minute: EMM_TEST_COMPILE=1")
def test_compiled_form_predicts_as_the_eager_model():
    assert_same_logits(_emm(component_adapters=True), batch_sizes=(1, 5, 64), compile=True)


def test_form_predicts_as_the_eager_model_without_batch_norm_and_with_other_layer_orders():
    assert_same_logits(_emm(_pool(batch_norm=False)))
    pool = {}
    for t, task in enumerate(("a", "b")):
        for k, norm in enumerate(("LayerNorm", "late BatchNorm")):
            spec = pool_model_spec(f"{task}_{k}", task, SIGNATURE, [16, 8], embedding_dim=3, dropout=0.1)
            if norm == "LayerNorm":  # a layer the form runs as the module it is
                spec["layers"] = [
                    {"type": "LayerNorm", "normalized_shape": [layer["num_features"]], "eps": 1e-5}
                    if layer["type"] == "BatchNorm1d"
                    else layer
                    for layer in spec["layers"]
                ]
            else:  # BatchNorm after the activation: a scale and shift, folded into the next Linear if any
                for start in (0, 4):
                    linear, norm_layer, activation, dropout = spec["layers"][start : start + 4]
                    spec["layers"][start : start + 4] = [linear, activation, norm_layer, dropout]
            torch.manual_seed(2 * t + k)
            pool[f"{task}_{k}"] = SingleTaskMLP(spec)
    for model in pool.values():
        warm_up_batch_norm(model)
    assert_same_logits(_emm(pool, max_levels=2, component_adapters=True))


@pytest.mark.parametrize("fold_bytes", [0, 5_000])
def test_vocabularies_too_large_to_fold_are_gathered_and_multiplied(fold_bytes):
    model = _emm(component_adapters=True)
    form = inference_form(model, fold_bytes=fold_bytes)
    assert form.n_folded < len(SIGNATURE["categorical"])
    assert (form.n_folded > 0) == (fold_bytes > 0)
    assert_same_logits(model, fold_bytes=fold_bytes)


@pytest.mark.parametrize("group_rows", [1, 20, inference.FOLD_GROUP_ROWS])
def test_small_vocabularies_share_rows_of_the_folded_table(group_rows):
    """Vocabularies 5, 4 and 3: with room for 60 combinations one row per combination serves all three
    columns; with 20, colour and shape share rows and size has its own; with 1, every column its own."""
    model = _emm(component_adapters=True)
    with mock.patch.object(inference, "FOLD_GROUP_ROWS", group_rows):
        form = inference_form(model)
        assert form.n_folded == {1: 3, 20: 2}.get(group_rows, 1)
        assert_same_logits(model)


def test_fold_groups_cover_every_column_once_within_the_row_budget():
    census_like = dict(enumerate([3, 3, 4, 4, 4, 4, 4, 4, 5, 6, 6, 6, 7, 7, 7, 9, 9, 10, 10, 11, 11, 11, 16, 18, 25]))
    groups = inference._fold_groups(census_like, 128)
    assert sorted(column for group in groups for column in group) == sorted(census_like)
    assert all(np.prod([census_like[c] for c in group]) <= 128 for group in groups)
    assert len(groups) < len(census_like) / 2
    assert inference._fold_groups({0: 200, 1: 3}, 128) == [[0], [1]]  # a vocabulary above the budget alone


def test_keep_freed_memory_sets_glibc_malloc_and_is_a_no_op_elsewhere():
    import platform

    assert inference.keep_freed_memory() == (platform.libc_ver()[0] == "glibc")


def _run_folded(ops: list, x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        kind = type(op).__name__
        if kind == "_Affine":
            x = x @ op.weight.T.float() + op.bias.float()
        elif kind == "_Scale":
            x = x * op.scale.float() + op.shift.float()
        else:
            x = op.function(x)
    return x


def test_batch_norm_is_folded_and_dropout_left_out():
    pool = _pool()
    component = next(iter(decompose(pool, max_levels=2).levels[1].values()))
    kinds = [type(op).__name__ for op in fold_layers(component)]
    assert kinds == ["_Affine", "_Activation"] * (len(kinds) // 2)  # no BatchNorm, no Dropout
    x = torch.randn(7, component[0].in_features)
    with torch.no_grad():
        torch.testing.assert_close(_run_folded(fold_layers(component), x), component(x), **TOLERANCE)

    # A BatchNorm with no Linear before it goes into the Linear after it; a last one stays a scale and shift.
    layers = torch.nn.Sequential(
        torch.nn.BatchNorm1d(6), torch.nn.Dropout(0.5), torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.BatchNorm1d(4)
    )
    layers.train()
    with torch.no_grad():
        for seed in range(3):
            layers(torch.randn(16, 6, generator=torch.Generator().manual_seed(seed)) * 3 + 1)
    layers.eval()
    ops = fold_layers(layers)
    assert [type(op).__name__ for op in ops] == ["_Affine", "_Activation", "_Scale"]
    x = torch.randn(7, 6)
    with torch.no_grad():
        torch.testing.assert_close(_run_folded(ops, x), layers(x), **TOLERANCE)


def test_building_the_form_leaves_the_model_alone_and_the_form_is_eval_only():
    model = _emm(component_adapters=True)
    model.train()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    form = inference_form(model)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not form.training and not list(form.parameters())
    with pytest.raises(RuntimeError, match="eval-only"):
        form.train()


# --- the cost table ---------------------------------------------------------------------------------------


def _test_table(rows: int = 64) -> tuple[pd.DataFrame, dict]:
    schema = {
        "categorical": [{"name": name, "vocabulary_size": size} for name, size in SIGNATURE["categorical"]],
        "dense": SIGNATURE["dense"],
        "tasks": [{"name": "a", "label_column": "label_a"}, {"name": "b", "label_column": "label_b"}],
    }
    batch = example_batch(SIGNATURE, batch_size=rows, seed=3)
    frame = pd.DataFrame(batch.categorical.numpy(), columns=[name for name, _ in SIGNATURE["categorical"]])
    for i, name in enumerate(SIGNATURE["dense"]):
        frame[name] = batch.dense[:, i].numpy()
    generator = np.random.default_rng(0)
    frame["label_a"], frame["label_b"] = generator.integers(0, 2, rows), generator.integers(0, 2, rows)
    return frame, schema


def test_cost_table_times_every_model_and_the_fused_models_inference_form():
    from emm.models.baselines.mmoe import MMoE

    test, schema = _test_table()
    pool = _pool()
    emm = _emm(pool, component_adapters=True)
    mmoe = MMoE(SIGNATURE, ["a", "b"], {"expert_dims": [16, 8], "tower_dims": [4]})
    models = {"emm": emm, "mmoe": mmoe, **pool}
    roles = {"emm": "emm", "mmoe": "baseline", **{name: "pool" for name in pool}}
    settings = {
        "throughput_batch_size": 16,
        "throughput_rows": 64,
        "throughput_repeats": 1,
        "latency_calls": 5,
        "latency_warm_up": 1,
    }
    costs = measure_costs(
        test,
        schema,
        settings,
        roles,
        **{f"model__{name}": model for name, model in models.items()},
        training__emm={"seconds": 12.0},
    )
    assert list(costs["model"]) == ["emm", "emm (inference form)", "mmoe", *pool, "pool (all models)"]
    assert (costs["rows_per_second"] > 0).all() and (costs["latency_ms"] > 0).all()
    form = costs.set_index("model").loc["emm (inference form)"]
    eager = costs.set_index("model").loc["emm"]
    assert form["role"] == "emm" and form["form"] == "inference" and eager["form"] == "eager"
    assert form["trainable_parameters"] == eager["trainable_parameters"] > 0
    assert np.isnan(form["train_seconds"]) and eager["train_seconds"] == 12.0
    assert form["max_logit_difference"] < 1e-5 and form["build_seconds"] >= 0
    assert costs["latency_calls"].iloc[0] == 5
    metrics = cost_metrics(costs)
    assert metrics["latency_ms.emm_inference_form"]["value"] > 0 and "rows_per_second.emm_inference_form" in metrics

    markdown = cost_markdown(costs, {"emm": "EMM", "mmoe": "MMoE"})
    assert "| latency ms |" in markdown and "batch 16" in markdown and "median ms of 5 calls" in markdown
    assert "| EMM (inference form) | emm |" in markdown
    assert "EMM (inference form): the same trained model" in markdown

    without_form = measure_costs(test, schema, {**settings, "inference_form": False}, roles, model__emm=emm)
    assert list(without_form["model"]) == ["emm"]


def test_the_cost_table_names_the_device_the_models_were_timed_on():
    test, schema = _test_table()
    emm = _emm(_pool(), component_adapters=True)
    roles = {"emm": "emm"}
    settings = {"throughput_batch_size": 16, "throughput_rows": 32, "throughput_repeats": 1, "latency_calls": 2}
    costs = measure_costs(test, schema, {**settings, "inference_form": False}, roles, model__emm=emm)
    assert costs["device"].iloc[0] == "cpu"
    assert "Inference on CPU with" in cost_markdown(costs, {})
    on_gpu = costs.assign(device="NVIDIA H200")  # what a run with `evaluate.device: cuda` records
    assert "Inference on NVIDIA H200:" in cost_markdown(on_gpu, {})
    if torch.cuda.is_available():
        timed = measure_costs(test, schema, {**settings, "device": "cuda"}, roles, model__emm=emm)
        assert timed["device"].iloc[0] == torch.cuda.get_device_name() and timed["max_logit_difference"].iloc[1] < 1e-5


def test_the_cost_table_times_the_models_taking_turns_pass_by_pass_and_round_by_round():
    """A spell of other load on the machine must slow a pass (of rows/s) or a round (of single-row calls)
    of every model, not every pass or call of one."""
    from emm.models.tabular import TabularData
    from emm.pipelines.evaluate.nodes import LATENCY_ROUNDS, _latencies_ms, _rows_per_second

    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def forward(self, batch):
            calls.append(self.name)

    test, schema = _test_table()
    data = TabularData.from_frame(test.head(32), schema)
    rates = _rows_per_second([[Recorder("a")], [Recorder("b"), Recorder("c")]], data, 16, 2, torch.device("cpu"))
    one_pass = ["a", "a", "b", "c", "b", "c"]  # two batches of 16 rows; an entry of two models runs both per batch
    assert calls == one_pass * 3  # the untimed pass, then two timed ones
    assert len(rates) == 2 and all(rate > 0 for rate in rates)

    calls.clear()
    entries = [[Recorder("a")], [Recorder("b"), Recorder("c")]]
    latencies = _latencies_ms(entries, data, 2 * LATENCY_ROUNDS, 1, torch.device("cpu"))
    one_round = ["a", "a", "b", "c", "b", "c"]  # two calls per round; an entry of two models runs both a call
    assert calls == ["a", "b", "c"] + one_round * LATENCY_ROUNDS  # the untimed call, then the rounds
    assert len(latencies) == 2 and all(latency > 0 for latency in latencies)


def test_form_of_emm_plus_where_the_pool_chains_of_one_level_1_group_part_at_level_2():
    # Same level-1 components, different level-2 ones: the chains of level 1's one group go on in two groups
    pool = {
        f"{task}_{size}": make_model(f"{task}_{size}", task, dims, seed=seed)
        for seed, (task, (size, dims)) in enumerate(
            [(task, shape) for task in ("a", "b") for shape in (("short", [32, 16, 8]), ("long", [32, 24, 16, 8]))]
        )
    }
    for model in pool.values():
        warm_up_batch_norm(model)
    fused = EMM(decompose(pool, max_levels=3), ["a", "b"], {})
    form = inference_form(EMM.with_pool_heads(fused).eval())
    assert any(group.rows for group in form.plans[1].chain_groups)  # what this pool is for
    assert_same_logits(_calibrate_batch_norm(_perturb(EMM.with_pool_heads(fused), seed=3, scale=0.1)))

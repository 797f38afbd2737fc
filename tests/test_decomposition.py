import pytest
import torch

from emm.models.decomposition import (
    Decomposition,
    DecompositionError,
    LayerSignature,
    decompose,
    find_common_layers,
    plan_cuts,
)
from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import example_batch

from helpers import SIGNATURE, heterogeneous_pool, make_model, warm_up_batch_norm


@pytest.fixture
def pool():
    models = heterogeneous_pool()
    for model in models.values():
        warm_up_batch_norm(model)
    return models


def test_every_model_gets_the_same_number_of_components(pool):
    decomposition = decompose(pool, max_levels=3)
    assert len(decomposition.levels) == 3
    for level in decomposition.levels:
        assert set(level) == set(pool)


def test_cuts_fall_after_whole_shared_blocks(pool):
    decomposition = decompose(pool, max_levels=3)
    # The shared blocks are 32->16 and 16->8 (Linear + BatchNorm), preceded by each model's own first layers.
    for name, info in decomposition.models.items():
        first_types = [layer["type"] for layer in info["level_layers"][1]]
        assert first_types == ["Linear", "BatchNorm1d", "ReLU", "Dropout"], name
        assert info["level_layers"][1][0]["in_features"] == 32
        assert info["level_layers"][2][0]["in_features"] == 16
    assert decomposition.level_dims == [32, 16, 8]


def test_components_of_a_level_share_input_and_output_shapes(pool):
    decomposition = decompose(pool, max_levels=3)
    batch = example_batch(SIGNATURE, batch_size=7, seed=5)
    outputs = {name: batch for name in pool}
    for level in decomposition.levels:
        shapes = set()
        for name, component in level.items():
            inputs = outputs[name]
            if not isinstance(inputs, type(batch)):
                shapes.add(("in", tuple(inputs.shape)))
            outputs[name] = component(inputs)
            shapes.add(("out", tuple(outputs[name].shape)))
        assert len({s for s in shapes if s[0] == "out"}) == 1
        assert len({s for s in shapes if s[0] == "in"}) <= 1


def test_recomposed_components_reproduce_each_model(pool):
    decomposition = decompose(pool, max_levels=3)
    batch = example_batch(SIGNATURE, batch_size=9, seed=11)
    for name, model in pool.items():
        hidden = batch
        for level in decomposition.levels:
            hidden = level[name](hidden)
        with torch.no_grad():
            assert torch.allclose(model.head(hidden), model(batch), atol=1e-6)


def test_embedding_joins_first_component_and_head_is_left_out(pool):
    decomposition = decompose(pool, max_levels=3)
    first = decomposition.levels[0]["a_small"]
    assert torch.equal(first[0].tables[0].weight, pool["a_small"].embedding.tables[0].weight)
    last_layers = decomposition.models["a_small"]["level_layers"][-1]
    assert all(layer.get("out_features") != 1 for layer in last_layers)


def test_max_levels_caps_the_number_of_levels(pool):
    assert len(decompose(pool, max_levels=2).levels) == 2
    assert len(decompose(pool, max_levels=1).levels) == 1


def test_more_shared_blocks_than_levels_are_thinned_evenly():
    models = {
        "x": make_model("x", "a", [16, 16, 16, 16, 8], seed=1),
        "y": make_model("y", "b", [16, 16, 16, 16, 8], seed=2),
    }
    assert len(decompose(models, max_levels=10).levels) == 5
    assert len(decompose(models, max_levels=3).levels) == 3


@pytest.mark.parametrize("surplus", [0, 1, 2, 3])
def test_surplus_cuts_never_cost_a_level(surplus):
    # Two models of 2 + surplus blocks 16 wide and a last one 8 wide: 2 + surplus candidate cuts (the last
    # block ends the body), of which max_levels=3 keeps two. Surplus 1 is the case of [16, 16, 16, 8].
    hidden = [16] * (2 + surplus) + [8]
    models = {"x": make_model("x", "a", hidden, seed=1), "y": make_model("y", "b", hidden, seed=2)}
    decomposition = decompose(models, max_levels=3)
    assert len(decomposition.levels) == 3
    assert decomposition.level_dims == [16, 16, 8]


def _stacked_blocks(n_blocks: int) -> list[LayerSignature]:
    """The signatures of a body of ``n_blocks`` Linear(16, 16) + ReLU blocks: one candidate cut per block but
    the last."""
    linear = LayerSignature("Linear", (16,), (16,), has_weights=True)
    relu = LayerSignature("ReLU", (16,), (16,), has_weights=False)
    return [linear, relu] * n_blocks


def test_cuts_give_min_of_max_levels_and_blocks_levels_of_even_size():
    for n_blocks in range(1, 13):
        signatures = {"x": _stacked_blocks(n_blocks), "y": _stacked_blocks(n_blocks)}
        common = find_common_layers(signatures)
        for max_levels in range(1, 16):
            cuts = plan_cuts(signatures, common, max_levels)
            assert cuts["x"] == cuts["y"]
            bounds = [0, *cuts["x"], 2 * n_blocks]
            blocks_per_level = [(b - a) // 2 for a, b in zip(bounds, bounds[1:])]
            case = f"{n_blocks} blocks, max_levels={max_levels}: {blocks_per_level}"
            assert len(blocks_per_level) == min(max_levels, n_blocks), case
            assert min(blocks_per_level) >= 1 and max(blocks_per_level) - min(blocks_per_level) <= 1, case


def test_payload_round_trip_keeps_outputs(pool):
    decomposition = decompose(pool, max_levels=3)
    restored = Decomposition.from_payload(decomposition.to_payload())
    batch = example_batch(SIGNATURE, batch_size=5, seed=3)
    for name in pool:
        a, b = batch, batch
        for original, copy in zip(decomposition.levels, restored.levels):
            a, b = original[name](a), copy[name](b)
        assert torch.allclose(a, b)


def test_loaded_components_are_in_eval_mode_as_decomposed_ones_are(pool):
    # Trained components describe a fixed function: dropout off, BatchNorm on its running statistics.
    restored = Decomposition.from_payload(decompose(pool, max_levels=3).to_payload())
    for level in restored.levels:
        for name, component in level.items():
            assert not any(module.training for module in component.modules()), name


def test_pool_without_common_layer_is_refused_naming_models_and_layers():
    models = {
        "wide": make_model("wide", "a", [40, 20], seed=1),
        "narrow": make_model("narrow", "b", [24, 12], seed=2),
    }
    with pytest.raises(DecompositionError) as error:
        decompose(models)
    message = str(error.value)
    assert "wide" in message and "narrow" in message and "Linear" in message


def test_activation_alone_marks_no_cut():
    # Without BatchNorm the only layers the models share are parameter-free activations and dropouts.
    models = {
        "p": make_model("p", "a", [40, 20], seed=1, batch_norm=False),
        "q": make_model("q", "b", [24, 12], seed=2, batch_norm=False),
    }
    with pytest.raises(DecompositionError, match="No layer with weights"):
        decompose(models)


def test_models_of_different_input_schema_are_refused():
    other_signature = {"categorical": [["colour", 5], ["shape", 4]], "dense": ["weight", "height"]}
    torch.manual_seed(0)
    stranger = SingleTaskMLP(pool_model_spec("stranger", "b", other_signature, [32, 16, 8], embedding_dim=3))
    models = {"a_small": make_model("a_small", "a", [32, 16, 8]), "stranger": stranger}
    with pytest.raises(DecompositionError, match="stranger.*size"):
        decompose(models)


def test_models_ending_in_different_widths_are_refused():
    models = {
        "ends_8": make_model("ends_8", "a", [32, 16, 8], seed=1),
        "ends_4": make_model("ends_4", "b", [32, 16, 4], seed=2),
    }
    with pytest.raises(DecompositionError, match="ends_8.*ends_4|ends_4.*ends_8"):
        decompose(models)

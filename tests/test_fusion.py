import math

import pytest
import torch
from torch.nn import functional as F

from emm.datasets.torch_model import TorchModelDataset
from emm.models.akf import UNBOUNDED, FusionGate, MultiTaskMerge
from emm.models.decomposition import decompose
from emm.models.emm import EMM
from emm.models.tabular import TabularData, example_batch
from emm.models.training import auc, predict
from emm.pipelines.fuse.nodes import SHARE_GRID, start_shares

from helpers import SIGNATURE, heterogeneous_pool, make_model, warm_up_batch_norm


def make_emm(**config) -> EMM:
    pool = heterogeneous_pool()
    for model in pool.values():
        warm_up_batch_norm(model)
    return EMM(decompose(pool, max_levels=3), ["a", "b"], config)


def training_step(model: EMM, seed: int = 0) -> None:
    batch = example_batch(SIGNATURE, batch_size=32, seed=seed)
    labels = torch.randint(0, 2, (32, 2), generator=torch.Generator().manual_seed(seed)).float()
    loss = F.binary_cross_entropy_with_logits(model(batch), labels)
    loss.backward()


def test_output_has_one_logit_per_task():
    model = make_emm()
    assert model(example_batch(SIGNATURE, batch_size=6)).shape == (6, 2)


def test_frozen_components_get_no_gradient_and_keep_batch_norm_statistics():
    model = make_emm()
    buffers = {
        name: buffer.clone()
        for component in model.components()
        for name, buffer in component.named_buffers(prefix=str(id(component)))
    }
    weights = [p.clone() for component in model.components() for p in component.parameters()]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for step in range(3):
        optimizer.zero_grad()
        training_step(model, seed=step)
        optimizer.step()
    for component in model.components():
        assert not component.training
        for parameter in component.parameters():
            assert not parameter.requires_grad and parameter.grad is None
    after = {
        name: buffer
        for component in model.components()
        for name, buffer in component.named_buffers(prefix=str(id(component)))
    }
    assert any("running_mean" in name for name in after)
    for name, buffer in after.items():
        assert torch.equal(buffer, buffers[name]), name
    for before, parameter in zip(weights, (p for c in model.components() for p in c.parameters())):
        assert torch.equal(before, parameter)


def test_task_gates_sum_to_one():
    model = make_emm()
    _, diagnostics = model.forward_with_diagnostics(example_batch(SIGNATURE, batch_size=10))
    for level in diagnostics:
        for weights in level.task_gates:
            assert torch.allclose(weights.sum(-1), torch.ones(10))
            assert (weights >= 0).all()
        for probabilities in level.fusion_gates:
            assert torch.allclose(probabilities.sum(-1), torch.ones(10))


def test_fusion_gates_and_mtm_receive_gradients():
    model = make_emm()
    model.train()
    training_step(model)
    for level in model.levels:
        for gate in level.fusion_gates:
            assert gate.linear.weight.grad is not None and gate.linear.weight.grad.abs().sum() > 0
        for merge in level.merges:
            assert merge.query[0].weight.grad.abs().sum() > 0
        for gate in level.task_gates:
            assert gate.linear.weight.grad.abs().sum() > 0


def test_fusion_gate_never_picks_its_own_task():
    gate = FusionGate(input_dim=3, n_tasks=3, own_task=1)
    with torch.no_grad():
        gate.linear.weight.zero_()
        gate.linear.bias.copy_(torch.tensor([0.0, 10.0, 1.0]))  # own task has by far the largest value
    outputs = torch.arange(3.0).repeat(4, 1).unsqueeze(-1).expand(4, 3, 2)  # task j's output is j
    selection = gate(torch.zeros(4, 3), outputs)
    assert (selection.choice == 2).all()
    expected = selection.probabilities[:, 2:3] * 2.0
    assert torch.allclose(selection.selected, expected.expand(4, 2))


def _dense_tanh(layer: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    linear = layer[0]
    return torch.tanh(x @ linear.weight.T + linear.bias)


@pytest.mark.parametrize("query_from", ["own", "paper"])
def test_mtm_scores_are_eq_6_in_the_chosen_form(query_from):
    torch.manual_seed(0)
    merge = MultiTaskMerge(dim=6, attention_dim=4, value_range=UNBOUNDED, query_from=query_from)
    own, selected = torch.randn(5, 6), torch.randn(5, 6)
    _, attention = merge(own, selected)
    with torch.no_grad():
        keys = [_dense_tanh(merge.key, w) for w in (own, selected)]
        # own: <Q(h_t), K(w)>, one query for both candidates; paper: <Q(w), K(w)>, each candidate its own.
        queries = [_dense_tanh(merge.query, own)] * 2 if query_from == "own" else [
            _dense_tanh(merge.query, w) for w in (own, selected)
        ]
        scores = torch.stack([(q * k).sum(-1) for q, k in zip(queries, keys)], dim=1) / math.sqrt(4)
    assert torch.allclose(attention, torch.softmax(scores, dim=-1), atol=1e-6)


def test_mtm_query_setting_reaches_every_merge_and_is_checked():
    model = make_emm(mtm_query="paper")
    assert all(merge.query_from == "paper" for level in model.levels for merge in level.merges)
    assert all(merge.query_from == "own" for level in make_emm().levels for merge in level.merges)
    with pytest.raises(ValueError, match="mtm_query.*'own'.*'paper'.*'self'"):
        make_emm(mtm_query="self")


def test_payload_saved_before_a_setting_existed_loads_with_its_default():
    model = make_emm()
    model.eval()
    payload = model.to_payload()
    payload["config"] = {key: value for key, value in payload["config"].items() if key != "mtm_query"}
    restored = EMM.from_payload(payload)
    restored.eval()
    assert restored.config["mtm_query"] == "own"
    batch = example_batch(SIGNATURE, batch_size=4, seed=2)
    assert torch.equal(restored(batch), model(batch))


def _emm_over_pool_of(activations: tuple[str, str]) -> EMM:
    pool = {
        "x": make_model("x", "a", [16, 8], seed=1, activation=activations[0]),
        "y": make_model("y", "b", [16, 8], seed=2, activation=activations[1]),
    }
    for model in pool.values():
        warm_up_batch_norm(model)
    model = EMM(decompose(pool, max_levels=2), ["a", "b"])
    return model.eval()


def _emitted_per_level(model: EMM) -> list[torch.Tensor]:
    """Per level [2 * B, D]: what the components of both tasks emit on a batch, the values MTM's V reads."""
    features, emitted = [example_batch(SIGNATURE, batch_size=64, seed=3)] * 2, []
    with torch.no_grad():
        for level in model.levels:
            features = [task[0](inputs) for task, inputs in zip(level.components, features)]
            emitted.append(torch.cat(features))
    return emitted


@pytest.mark.parametrize(
    "activations",
    [(name, name) for name in ["ReLU", "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid"]] + [("ReLU", "Tanh")],
    ids="-".join,
)
def test_mtm_value_map_starts_as_the_identity_on_what_components_emit(activations):
    model = _emm_over_pool_of(activations)
    for level, emitted in zip(model.levels, _emitted_per_level(model)):
        for merge in level.merges:
            with torch.no_grad():
                assert torch.allclose(merge.value(emitted), emitted, atol=1e-6)


def test_mtm_value_map_of_a_tanh_pool_is_the_identity_and_stays_in_minus_one_one():
    model = _emm_over_pool_of(("Tanh", "Tanh"))
    for level, emitted in zip(model.levels, _emitted_per_level(model)):
        assert emitted.min() < 0  # the features a ReLU value map would have cut
        for merge in level.merges:
            with torch.no_grad():
                assert torch.allclose(merge.value(emitted), emitted, atol=1e-6)
                # Beyond the components' range V stops at its edge: the next level's components never saw more.
                assert merge.value(3 * emitted).abs().max() <= 1


def test_mtm_switch_removes_fusion_gates_and_attention():
    model = make_emm(use_mtm=False)
    names = [name for name, _ in model.named_parameters()]
    assert not any("fusion_gates" in name or "merges" in name for name in names)
    assert model(example_batch(SIGNATURE, batch_size=3)).shape == (3, 2)


def test_component_adapters_start_as_identity_and_train():
    plain, adapted = make_emm(component_adapters=False), make_emm(component_adapters=True)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    batch = example_batch(SIGNATURE, batch_size=5, seed=8)
    plain.eval(), adapted.eval()
    assert torch.allclose(plain(batch), adapted(batch), atol=1e-6)
    adapters = [a for level in adapted.levels for task in level.adapters for a in task]
    assert len(adapters) == 3 * 4
    adapted.train()
    training_step(adapted)
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in adapters)


def test_untrained_components_switch_trains_fresh_components():
    model = make_emm(use_trained_components=False)
    assert all(p.requires_grad for c in model.components() for p in c.parameters())
    model.train()
    assert all(c.training for c in model.components())


def _snapshot(module: torch.nn.Module) -> tuple:
    return (
        {key: value.clone() for key, value in module.state_dict().items()},
        [p.requires_grad for p in module.parameters()],
        [m.training for m in module.modules()],
    )


def test_building_emm_leaves_the_decomposition_untouched():
    # The Table II variants are built from one Decomposition in one process: a variant that re-initialised
    # or froze the decomposition's own modules would hand the next variant altered components.
    pool = heterogeneous_pool()
    for model in pool.values():
        warm_up_batch_norm(model)
    decomposition = decompose(pool, max_levels=3)
    components = [component for level in decomposition.levels for component in level.values()]
    before = [_snapshot(component) for component in components]
    for trained in (False, True):
        model = EMM(decomposition, ["a", "b"], {"use_trained_components": trained})
        model.train()
        training_step(model)
    for component, (state, requires_grad, training) in zip(components, before):
        after_state, after_requires_grad, after_training = _snapshot(component)
        assert state.keys() == after_state.keys()
        assert all(torch.equal(state[key], after_state[key]) for key in state)
        assert after_requires_grad == requires_grad and after_training == training
        assert all(p.grad is None for p in component.parameters())


def test_saved_model_loads_with_identical_outputs(tmp_path):
    model = make_emm()
    model.eval()
    batch = example_batch(SIGNATURE, batch_size=8, seed=4)
    dataset = TorchModelDataset(str(tmp_path / "emm.pt"))
    dataset.save(model)
    restored = dataset.load()
    restored.eval()
    assert isinstance(restored, EMM)
    assert torch.allclose(restored(batch), model(batch))


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="attention_width"):
        make_emm(attention_width=3)


TABLE_II = {  # row: (use_trained_components, use_mtm)
    "baseline": (False, False),
    "baseline+MTM": (False, True),
    "baseline+p": (True, False),
    "EMM": (True, True),
}


@pytest.mark.parametrize("row", TABLE_II)
def test_table_ii_switches_set_what_exists_and_what_is_frozen(row):
    trained, mtm = TABLE_II[row]
    pool = heterogeneous_pool()
    for model in pool.values():
        warm_up_batch_norm(model)
    original = {name: p.detach().clone() for name, p in pool["a_small"].named_parameters()}
    model = EMM(decompose(pool, max_levels=3), ["a", "b"], {"use_trained_components": trained, "use_mtm": mtm})
    names = [name for name, _ in model.named_parameters()]
    assert any("fusion_gates" in name for name in names) == mtm
    assert any("merges" in name for name in names) == mtm
    assert any("task_gates" in name for name in names)
    component_parameters = [p for c in model.components() for p in c.parameters()]
    assert all(p.requires_grad != trained for p in component_parameters)
    counts = model.parameter_counts()
    assert (counts["frozen"] == sum(p.numel() for p in component_parameters)) == trained
    assert (counts["frozen"] == 0) == (not trained)
    # With trained components, level 1 of a_small computes what the trained model's first layers compute;
    # from scratch its weights are fresh.
    first_linear = next(m for m in model.levels[0].components[0][0].modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(first_linear.weight, original["body.0.weight"]) == trained


def pool_logits(model: EMM, batch) -> torch.Tensor:
    """Each task's pool models run whole (embedding, body, head), their logits averaged: [B, T]."""
    pool = model.decomposition
    columns = []
    for task in model.tasks:
        logits = []
        for name in pool.models_of(task):
            hidden = batch
            for level in pool.levels:
                hidden = level[name](hidden)
            logits.append(pool.heads[name](hidden))
        columns.append(torch.cat(logits, dim=1).mean(dim=1))
    return torch.stack(columns, dim=1)


def test_decomposition_keeps_the_trained_heads_and_saves_them(tmp_path):
    pool = heterogeneous_pool()
    decomposition = decompose(pool, max_levels=3)
    for name, model in pool.items():
        assert torch.equal(decomposition.heads[name].weight, model.head.weight)
    path = tmp_path / "components.pt"
    TorchModelDataset(str(path)).save(decomposition)
    loaded = TorchModelDataset(str(path)).load()
    for name, model in pool.items():
        assert torch.equal(loaded.heads[name].weight, model.head.weight)
        assert torch.equal(loaded.heads[name].bias, model.head.bias)


def test_pool_heads_from_scratch_start_as_the_average_of_each_tasks_pool_models():
    model = make_emm(pool_heads=True).eval()
    batch = example_batch(SIGNATURE, batch_size=8, seed=4)
    with torch.no_grad():
        assert torch.allclose(model(batch), pool_logits(model, batch), atol=1e-6)


def test_emm_plus_starts_halfway_between_emm_and_its_pool_and_tunes_everything():
    fused = make_emm(component_adapters=True)
    optimizer = torch.optim.Adam([p for p in fused.parameters() if p.requires_grad], lr=0.05)
    fused.train()
    for step in range(3):  # a trained EMM: towers and gates away from their initial values
        optimizer.zero_grad()
        training_step(fused, seed=step)
        optimizer.step()
    plus = EMM.with_pool_heads(fused).eval()
    fused.eval()
    batch = example_batch(SIGNATURE, batch_size=8, seed=9)
    with torch.no_grad():
        expected = 0.5 * fused(batch) + 0.5 * pool_logits(plus, batch)
        assert torch.allclose(plus(batch), expected, atol=1e-6)
    assert all(p.requires_grad for p in plus.parameters())
    plus.train()
    assert not any(component.training for component in plus.components())  # BatchNorm statistics fixed
    training_step(plus)
    assert all(p.grad is not None for component in plus.components() for p in component.parameters())
    assert all(p.grad is not None for head in plus.heads for p in head.parameters())


def trained_emm(steps: int = 3) -> EMM:
    """An EMM whose towers and gates moved away from their initial values, in eval mode."""
    fused = make_emm()
    optimizer = torch.optim.Adam([p for p in fused.parameters() if p.requires_grad], lr=0.05)
    fused.train()
    for step in range(steps):
        optimizer.zero_grad()
        training_step(fused, seed=step)
        optimizer.step()
    return fused.eval()


def test_emm_plus_starts_at_each_tasks_share_of_emm():
    fused = trained_emm()
    plus = EMM.with_pool_heads(fused, emm_shares=[0.2, 0.9]).eval()
    batch = example_batch(SIGNATURE, batch_size=8, seed=9)
    shares = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        assert torch.allclose(plus(batch), shares * fused(batch) + (1 - shares) * pool_logits(plus, batch), atol=1e-6)
    for bad in ([0.5], [0.5, 1.5]):
        with pytest.raises(ValueError, match="one share in \\[0, 1\\] per task"):
            EMM.with_pool_heads(fused, emm_shares=bad)


def test_emm_plus_start_share_chosen_on_validation_is_the_grid_share_with_the_best_auc():
    fused = trained_emm()
    batch = example_batch(SIGNATURE, batch_size=400, seed=11)
    with torch.no_grad():
        emm_logits, pool = fused(batch), pool_logits(EMM.with_pool_heads(fused), batch)
    noise = torch.randn(400, 2, generator=torch.Generator().manual_seed(3))
    # Task a's labels follow EMM's logit, task b's the pool's: the best shares sit at opposite ends.
    followed = torch.stack([emm_logits[:, 0], pool[:, 1]], dim=1)
    followed = (followed - followed.mean(dim=0)) / followed.std(dim=0) + 0.3 * noise
    labels = (followed > followed.median(dim=0).values).float()
    validation = TabularData(batch.categorical, batch.dense, labels, ["a", "b"])
    shares = start_shares(fused, validation, "validation")
    scores = []  # each share's model built and scored whole: [share][task]
    for share in SHARE_GRID:
        probabilities = predict(EMM.with_pool_heads(fused, emm_shares=[share, share]), validation)
        scores.append([auc(labels[:, column].numpy(), probabilities[:, column]) for column in range(2)])
    for column, task in enumerate(["a", "b"]):
        best = max(row[column] for row in scores)
        assert shares[task] == max(share for share, row in zip(SHARE_GRID, scores) if row[column] >= best - 1e-12)
    assert shares["a"] > shares["b"]
    assert start_shares(fused, validation, 0.3) == {"a": 0.3, "b": 0.3}


def test_emm_plus_saves_and_loads_with_identical_outputs(tmp_path):
    plus = EMM.with_pool_heads(make_emm()).eval()
    path = tmp_path / "emm_plus.pt"
    TorchModelDataset(str(path)).save(plus)
    loaded = TorchModelDataset(str(path)).load().eval()
    batch = example_batch(SIGNATURE, batch_size=5, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(batch), plus(batch))
    assert loaded.config["pool_heads"] and loaded.config["tune_components"]


def test_pool_heads_need_heads_and_trained_components():
    pool = heterogeneous_pool()
    decomposition = decompose(pool, max_levels=3)
    with pytest.raises(ValueError, match="use_trained_components"):
        EMM(decomposition, ["a", "b"], {"pool_heads": True, "use_trained_components": False})
    decomposition.heads = {}
    with pytest.raises(ValueError, match="decompose stage again"):
        EMM(decomposition, ["a", "b"], {"pool_heads": True})

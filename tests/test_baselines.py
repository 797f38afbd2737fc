import io
import math

import pytest
import torch
from torch.nn import functional as F

from emm.datasets.torch_model import TorchModelDataset
from emm.models.baselines import BASELINES, build_baseline
from emm.models.serialization import from_payload
from emm.models.tabular import TabularBatch, example_batch

from helpers import SIGNATURE

KINDS = sorted(BASELINES)
TASKS = ["a", "b", "c"]

# Settings away from the defaults, so that round trips also carry a model's non-default structure.
NON_DEFAULT_CONFIG = {
    "shared_bottom": {"bottom_dims": [24, 12], "dropout": 0.1},
    "mmoe": {"n_experts": 3, "expert_dims": [16, 8]},
    "ple": {"n_levels": 3, "n_task_experts": 2, "n_shared_experts": 2},
    "aitm": {"task_order": ["c", "a", "b"], "tower_dims": [16, 8]},
    "adatt": {"n_levels": 3, "n_task_experts": 3, "n_shared_experts": 1},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second intra-op thread gains nothing, and on a busy machine it turns a
    training test of a fraction of a second into tens of seconds of threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(kind: str, tasks: list[str] = TASKS, seed: int = 0, **config):
    torch.manual_seed(seed)
    return build_baseline(kind, SIGNATURE, list(tasks), config)


def funnel_labels(batch: TabularBatch) -> torch.Tensor:
    """A learnable funnel, each step a subset of the one before: a = weight > 0, b = a and height > 0,
    c = b and colour code < 3."""
    a = batch.dense[:, 0] > 0
    b = a & (batch.dense[:, 1] > 0)
    c = b & (batch.categorical[:, 0] < 3)
    return torch.stack([a, b, c], dim=1).float()


def base_rate_loss(labels: torch.Tensor) -> float:
    """The BCE of predicting each task's label frequency: what a model that ignores the features reaches."""
    rates = labels.mean(0).clamp(1e-6, 1 - 1e-6)
    return float(F.binary_cross_entropy(rates.expand_as(labels), labels))


def parameters_of(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    parameters = list(module.parameters())
    assert parameters
    return parameters


def gradients(model, column: int, module: torch.nn.Module, batch: TabularBatch) -> list[torch.Tensor | None]:
    """d (sum of the logits of one output column) / d (the parameters of ``module``)."""
    model.zero_grad(set_to_none=True)
    model(batch)[:, column].sum().backward()
    return [parameter.grad for parameter in parameters_of(module)]


def is_nonzero(grads: list[torch.Tensor | None]) -> bool:
    """Whether the logit depends on the parameters; ``None`` (off the graph) and zeros (off the logit's own
    column: ``torch.cat`` passes zeros back to the other columns' inputs) both mean it does not."""
    return any(grad is not None and grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_tasks", [2, 3])
def test_one_logit_per_task(kind, n_tasks):
    model = make(kind, TASKS[:n_tasks])
    batch = example_batch(SIGNATURE, batch_size=5)
    assert model(batch).shape == (5, n_tasks)
    model.eval()
    assert model(batch).shape == (5, n_tasks)


@pytest.mark.parametrize("kind", KINDS)
def test_adam_steps_learn_a_toy_problem(kind):
    model = make(kind)
    batch = example_batch(SIGNATURE, batch_size=256, seed=1)
    labels = funnel_labels(batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logits = model(batch)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        if hasattr(model, "extra_loss"):
            loss = loss + model.extra_loss(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)
    # Lower than label frequencies alone allow: the model uses the features.
    assert last < 0.3 * base_rate_loss(labels), (last, base_rate_loss(labels))


@pytest.mark.parametrize("kind", KINDS)
def test_payload_round_trip_gives_identical_outputs(kind):
    model = make(kind, **NON_DEFAULT_CONFIG[kind])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seed in range(3):  # changes the weights and BatchNorm statistics away from any fresh model's
        batch = example_batch(SIGNATURE, batch_size=32, seed=seed)
        loss = F.binary_cross_entropy_with_logits(model(batch), funnel_labels(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.to_payload(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # the restored model must owe nothing to the generator's state
    restored = from_payload(torch.load(buffer, weights_only=True))
    assert type(restored) is type(model)
    assert (restored.tasks, restored.config) == (model.tasks, model.config)
    model.eval()
    restored.eval()
    batch = example_batch(SIGNATURE, batch_size=16, seed=7)
    with torch.no_grad():
        assert torch.equal(model(batch), restored(batch))


@pytest.mark.parametrize("kind", KINDS)
def test_torch_model_dataset_saves_and_loads(kind, tmp_path):
    model = make(kind).eval()
    dataset = TorchModelDataset(str(tmp_path / f"{kind}.pt"))
    dataset.save(model)
    loaded = dataset.load().eval()
    batch = example_batch(SIGNATURE, batch_size=8)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_setting_is_an_error_naming_the_kind(kind):
    with pytest.raises(ValueError, match=rf"Unknown {kind} settings \['hiden_dims'\]"):
        make(kind, hiden_dims=[8])


def test_unknown_kind_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"'mmeo'.*'adatt', 'aitm', 'mmoe', 'ple', 'shared_bottom'"):
        build_baseline("mmeo", SIGNATURE, TASKS, None)


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_is_trainable_and_counted(kind):
    model = make(kind)
    counts = model.parameter_counts()
    assert counts == {"trainable": sum(p.numel() for p in model.parameters()), "frozen": 0}
    assert counts["trainable"] > 0


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_aitm_transfers_information_along_the_task_order(order):
    model = make("aitm", ["a", "b"], task_order=order)
    batch = example_batch(SIGNATURE, batch_size=16)
    earlier, later = (model.tasks.index(task) for task in order)
    # The earlier task never sees the later one's tower, transfer or head ...
    for module in (model.towers[later], model.heads[later], model.transfers[0], model.information_transfers[0]):
        assert not is_nonzero(gradients(model, earlier, module, batch))
    # ... while the later task's logit depends on the earlier task's tower, through the transfer.
    assert is_nonzero(gradients(model, later, model.towers[earlier], batch))
    assert is_nonzero(gradients(model, later, model.transfers[0], batch))
    # Each output column is its own task's head, whatever the order.
    assert is_nonzero(gradients(model, earlier, model.heads[earlier], batch))


def test_aitm_chains_transfers_through_every_step():
    model = make("aitm", TASKS, task_order=["c", "a", "b"])
    batch = example_batch(SIGNATURE, batch_size=16)
    c, a, b = (TASKS.index(task) for task in ("c", "a", "b"))
    assert is_nonzero(gradients(model, b, model.towers[c], batch))  # c -> a -> b
    assert not is_nonzero(gradients(model, a, model.towers[b], batch))
    assert not is_nonzero(gradients(model, c, model.towers[a], batch))


@pytest.mark.parametrize("order", [["a", "z"], ["a"], ["a", "a"], ["a", "b", "z"]])
def test_aitm_task_order_must_name_each_task_once(order):
    with pytest.raises(ValueError, match="task_order"):
        make("aitm", ["a", "b"], task_order=order)


def test_aitm_task_order_error_names_the_unknown_task():
    with pytest.raises(ValueError, match=r"unknown tasks \['z'\]"):
        make("aitm", ["a", "b"], task_order=["z", "a"])


def test_aitm_calibration_penalises_a_later_step_likelier_than_the_earlier():
    model = make("aitm", TASKS, calibration_weight=0.5)
    consistent = torch.tensor([[2.0, 1.0, -1.0], [0.0, -2.0, -2.0], [3.0, 3.0, 0.5]])  # never increasing
    assert model.extra_loss(consistent).item() == 0.0

    inconsistent = torch.tensor([[0.0, 1.0, -1.0], [0.0, -2.0, -2.0], [-1.0, 3.0, 4.0]])
    p = torch.sigmoid(inconsistent)
    expected = 0.5 * (F.relu(p[:, 1] - p[:, 0]).mean() + F.relu(p[:, 2] - p[:, 1]).mean())
    assert model.extra_loss(inconsistent).item() > 0
    assert math.isclose(model.extra_loss(inconsistent).item(), expected.item(), rel_tol=1e-6)

    # The funnel order, not the column order, decides what is consistent.
    reversed_funnel = make("aitm", TASKS, task_order=["c", "b", "a"])
    assert reversed_funnel.extra_loss(consistent).item() > 0
    assert reversed_funnel.extra_loss(-consistent).item() == 0.0


def test_adatt_gates_are_distributions_over_every_expert():
    model = make("adatt", TASKS, n_levels=2, n_task_experts=2, n_shared_experts=1).eval()
    batch = example_batch(SIGNATURE, batch_size=8)
    logits, gates = model.forward_with_gates(batch)
    assert torch.equal(logits, model(batch))
    n_experts = len(TASKS) * 2 + 1
    assert len(gates) == 2
    for depth, level in enumerate(gates):
        assert level.tasks.shape == (8, len(TASKS), n_experts)
        assert (level.tasks >= 0).all()
        torch.testing.assert_close(level.tasks.sum(-1), torch.ones(8, len(TASKS)))
        if depth == 0:  # the shared stream feeds the next level
            assert level.shared.shape == (8, n_experts)
            torch.testing.assert_close(level.shared.sum(-1), torch.ones(8))
        else:
            assert level.shared is None


def test_adatt_fuses_other_tasks_experts_and_keeps_a_native_residual():
    model = make("adatt", ["a", "b"], n_levels=1, n_task_experts=2)
    batch = example_batch(SIGNATURE, batch_size=16)
    level = model.levels[0]
    assert is_nonzero(gradients(model, 0, level.task_experts[1], batch))  # a reads b's experts via its gate
    # The residual weights v are learned: task a's loss moves its own, and never b's.
    assert is_nonzero(gradients(model, 0, level.task_units[0], batch))
    assert not is_nonzero(gradients(model, 0, level.task_units[1], batch))
    assert level.task_units[0].native_weights.shape == (2,)
    # With one expert per task the residual is that expert's output, without weights.
    assert make("adatt", ["a", "b"], n_task_experts=1).levels[0].task_units[0].native_weights is None


def test_ple_levels_have_the_configured_experts_and_gates():
    model = make("ple", TASKS, n_levels=3, n_task_experts=2, n_shared_experts=3)
    assert len(model.levels) == 3
    for depth, level in enumerate(model.levels):
        assert [len(experts) for experts in level.task_experts] == [2, 2, 2]
        assert len(level.shared_experts) == 3
        assert [gate.linear.out_features for gate in level.task_gates] == [2 + 3] * 3  # own + shared
        if depth < 2:
            assert level.shared_gate.linear.out_features == 3 * 2 + 3  # every expert of the level
        else:
            assert level.shared_gate is None


def test_mmoe_has_one_gate_per_task_over_the_shared_experts():
    model = make("mmoe", TASKS, n_experts=5)
    assert len(model.experts) == 5
    assert [gate.linear.out_features for gate in model.gates] == [5, 5, 5]


@pytest.mark.parametrize(
    "kind, setting", [("mmoe", {"n_experts": 0}), ("ple", {"n_levels": 0}), ("adatt", {"expert_dims": []})]
)
def test_structure_without_experts_or_levels_is_an_error(kind, setting):
    with pytest.raises(ValueError, match=f"{kind} setting {next(iter(setting))}"):
        make(kind, **setting)

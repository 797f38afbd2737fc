import numpy as np
import pandas as pd
import pytest
import torch

from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import TabularData
from emm.models.training import TrainingConfig, fit, predict

SCHEMA = {
    "categorical": [{"name": "group", "vocabulary_size": 6}],
    "dense": ["x1", "x2"],
    "tasks": [{"name": "t", "label_column": "label_t"}],
}


def toy_table(rows: int, seed: int) -> pd.DataFrame:
    """A learnable problem: the label depends on a dense value and the category."""
    rng = np.random.default_rng(seed)
    group = rng.integers(1, 6, rows)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    logit = 2.5 * x1 - 1.5 * (group >= 3) + 0.3 * x2
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return pd.DataFrame({"group": group, "x1": x1, "x2": x2, "label_t": label})


def make_model() -> SingleTaskMLP:
    signature = {"categorical": [["group", 6]], "dense": ["x1", "x2"]}
    return SingleTaskMLP(pool_model_spec("toy", "t", signature, [16, 8], embedding_dim=2))


@pytest.fixture(scope="module")
def data():
    return TabularData.from_frame(toy_table(3000, 0), SCHEMA), TabularData.from_frame(toy_table(1000, 1), SCHEMA)


def config(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"batch_size": 128, "max_epochs": 6, "patience": 2, "progress_bar": False, **overrides})


def test_training_lowers_the_loss_and_learns(data):
    train, validation = data
    history = fit(make_model(), train, validation, ["t"], config())
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.best_validation_auc["t"] > 0.8


def test_best_epoch_weights_are_kept(data):
    train, validation = data
    model = make_model()
    history = fit(model, train, validation, ["t"], config(learning_rate=0.05, max_epochs=8))
    from emm.models.training import auc_per_task

    final = auc_per_task(validation.labels.numpy(), predict(model, validation), ["t"])["t"]
    assert final == pytest.approx(history.best_validation_auc["t"], abs=1e-9)
    assert final == pytest.approx(max(a["t"] for a in history.validation_auc), abs=1e-9)


def test_early_stopping_stops_after_patience(data):
    train, validation = data
    history = fit(make_model(), train, validation, ["t"], config(learning_rate=0.5, max_epochs=30, patience=1))
    assert len(history.train_loss) == history.best_epoch + 2 or len(history.train_loss) == 30


def test_same_seed_gives_the_same_model(data):
    train, validation = data
    first, second = make_model(), make_model()
    second.load_state_dict(first.state_dict())
    fit(first, train, validation, ["t"], config(max_epochs=2))
    fit(second, train, validation, ["t"], config(max_epochs=2))
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_unknown_training_setting_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        TrainingConfig.from_params({"epochs": 3})


def test_pool_node_builds_the_same_model_whatever_ran_before(data, monkeypatch):
    """The first model of a process must not depend on the generator state left by earlier work."""
    from emm.pipelines import model_training
    from emm.pipelines.train_pool import nodes

    built = []
    monkeypatch.setattr(model_training, "fit", lambda model, *args, **kwargs: built.append(model) or _NoHistory())
    schema = {**SCHEMA, "categorical": [{"name": "group", "vocabulary_size": 6}]}
    table = toy_table(200, 3)
    pool = {"embedding_dim": 2, "dropout": 0.0, "batch_norm": True, "activation": "ReLU"}
    for noise in (1, 2):
        torch.manual_seed(noise)
        torch.rand(noise * 7)
        nodes.train_pool_model(table, table, schema, {"task": "t", "hidden_dims": [4]}, pool, {"seed": 5}, "m")
    for a, b in zip(built[0].state_dict().values(), built[1].state_dict().values()):
        assert torch.equal(a, b)


class _NoHistory:
    def as_dict(self):
        return {"best_validation_auc": {"t": 0.5}}


class PenalisedModel(SingleTaskMLP):
    """A model whose objective adds a penalty on large logits, as AITM's calibrator adds its own term."""

    def extra_loss(self, logits: torch.Tensor) -> torch.Tensor:
        return 10.0 * logits.pow(2).mean()


def test_a_models_extra_loss_is_part_of_its_objective(data):
    train, validation = data
    signature = {"categorical": [["group", 6]], "dense": ["x1", "x2"]}
    spec = pool_model_spec("toy", "t", signature, [16, 8], embedding_dim=2)
    torch.manual_seed(0)
    plain = SingleTaskMLP(spec)
    torch.manual_seed(0)
    penalised = PenalisedModel(spec)
    fit(plain, train, validation, ["t"], config(max_epochs=2))
    fit(penalised, train, validation, ["t"], config(max_epochs=2))
    plain_logits = torch.logit(torch.as_tensor(predict(plain, validation)))
    penalised_logits = torch.logit(torch.as_tensor(predict(penalised, validation)))
    assert penalised_logits.abs().mean() < 0.5 * plain_logits.abs().mean()

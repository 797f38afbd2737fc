import numpy as np
import pandas as pd
import pytest
import torch

from emm.datasets import ParquetTableDataset
from emm.models import training
from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import StreamingTabularData, TabularData
from emm.models.training import TrainingConfig, fit, predict, resolve_device

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
    # The CPU, where a seed gives the same weights bit for bit; CUDA's embedding gradients are not deterministic.
    settings = {"batch_size": 128, "max_epochs": 6, "patience": 2, "progress_bar": False, "device": "cpu"}
    return TrainingConfig(**{**settings, **overrides})


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
    device = "cpu"

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


def test_auto_device_is_cuda_only_where_there_is_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("setting", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_an_error_naming_the_setting(setting, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"training\.device .*CUDA is not available"):
        resolve_device(setting)
    with pytest.raises(ValueError, match=r"training\.device"):
        TrainingConfig.from_params({"device": setting})


def test_a_cuda_device_beyond_those_visible_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"training\.device is 'cuda:1' but only 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("setting", ["gpu", "CUDA", "cuda:x", "cuda:", "mps", "", None])
def test_unknown_device_is_refused_when_the_settings_are_read(setting):
    with pytest.raises(ValueError, match=r"training\.device .*auto, cpu, cuda, cuda:N"):
        TrainingConfig.from_params({"device": setting})


def test_training_and_prediction_on_the_cpu_named_explicitly(data):
    train, validation = data
    model = make_model()
    history = fit(model, train, validation, ["t"], config(max_epochs=2, device="cpu"))
    assert history.device == "cpu" and history.as_dict()["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in model.parameters())
    probabilities = predict(model, validation)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (len(validation), 1)


class _Reached(Exception):
    """Raised by a model once fit or predict has handed it a batch: the batch is all the test needs."""


class DeviceRecordingModel(SingleTaskMLP):
    """Records the devices of its weights and of the batch it is given, then stops the caller: in forward
    with ``stop_in_forward``, else in ``extra_loss``, which fit calls after the labels' cross-entropy, and
    that refuses labels on another device than the logits."""

    stop_in_forward = False

    def forward(self, batch):
        self.seen = {
            "parameters": {p.device.type for p in self.parameters()},
            "batch": {batch.categorical.device.type, batch.dense.device.type},
        }
        if self.stop_in_forward:
            raise _Reached
        return super().forward(batch)

    def extra_loss(self, logits):
        raise _Reached


def streamed(table: pd.DataFrame, path) -> StreamingTabularData:
    dataset = ParquetTableDataset(str(path), row_group_rows=500)
    dataset.save(table)
    return StreamingTabularData(dataset.load(), SCHEMA, shuffle_buffer_rows=1000)


@pytest.mark.parametrize("source", ["memory", "stream"])
def test_fit_moves_the_model_and_every_batch_to_the_configured_device(data, source, tmp_path, monkeypatch):
    """The meta device stands in for CUDA: its tensors have shapes but no values, so the first step is as
    far as training goes there, and far enough to see where the model and its inputs are."""
    train, validation = data
    if source == "stream":
        train = streamed(toy_table(3000, 0), tmp_path / "train")
    monkeypatch.setattr(training, "resolve_device", lambda setting: torch.device("meta"))
    model = DeviceRecordingModel(make_model().spec)
    with pytest.raises(_Reached):
        fit(model, train, validation, ["t"], config())
    assert model.seen == {"parameters": {"meta"}, "batch": {"meta"}}


def test_predict_feeds_the_model_on_its_own_device(data):
    model = DeviceRecordingModel(make_model().spec).to("meta")
    model.stop_in_forward = True
    with pytest.raises(_Reached):
        predict(model, data[1])
    assert model.seen == {"parameters": {"meta"}, "batch": {"meta"}}


def test_train_model_reports_the_device_and_returns_the_model_on_the_cpu():
    from emm.pipelines.model_training import train_model

    table = toy_table(300, 4)
    model, report = train_model(make_model, table, table, SCHEMA, ["t"], config(max_epochs=1), "m")
    assert report["device"] == "cpu"
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_keeps_the_best_weights_and_predicts_to_numpy(data):
    train, validation = data
    model = make_model()
    history = fit(model, train, validation, ["t"], config(learning_rate=0.05, max_epochs=4, device="cuda"))
    assert history.device == "cuda" and {p.device.type for p in model.parameters()} == {"cuda"}
    final = training.auc_per_task(validation.labels.numpy(), predict(model, validation), ["t"])["t"]
    assert final == pytest.approx(history.best_validation_auc["t"], abs=1e-6)


def test_pool_models_of_the_same_structure_and_task_start_from_different_weights(data, monkeypatch):
    """Two pool entries with one spec and task must not be the same model twice."""
    from emm.pipelines import model_training
    from emm.pipelines.train_pool import nodes

    built, seeds = [], []

    def record(model, train, validation, tasks, config, name):
        built.append(model)
        seeds.append(config.seed)
        return _NoHistory()

    monkeypatch.setattr(model_training, "fit", record)
    table = toy_table(200, 3)
    pool = {"embedding_dim": 2, "dropout": 0.0, "batch_norm": True, "activation": "ReLU"}
    for name in ("twin_a", "twin_b", "twin_a"):
        nodes.train_pool_model(table, table, SCHEMA, {"task": "t", "hidden_dims": [4]}, pool, {"seed": 5}, name)
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]
    assert seeds[0] == model_training.model_seed(5, "twin_a") != model_training.model_seed(6, "twin_a")
    first, second, again = (model.state_dict()["body.0.weight"] for model in built)
    assert not torch.equal(first, second) and torch.equal(first, again)


def test_validate_start_keeps_the_starting_weights_when_no_epoch_beats_them(data):
    train, validation = data
    model = make_model()
    fit(model, train, validation, ["t"], config())
    trained = {key: value.clone() for key, value in model.state_dict().items()}
    # A step size that wrecks the model: every epoch scores below the start, which must be what is kept.
    history = fit(model, train, validation, ["t"], config(learning_rate=5.0, max_epochs=2, validate_start=True))
    assert history.best_epoch == -1
    assert history.best_validation_auc == history.start_validation_auc
    assert all(a["t"] < history.start_validation_auc["t"] for a in history.validation_auc)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_validate_start_keeps_a_better_epoch(data):
    train, validation = data
    history = fit(make_model(), train, validation, ["t"], config(validate_start=True))
    assert history.best_epoch >= 0
    assert history.best_validation_auc["t"] > history.start_validation_auc["t"]
    assert history.as_dict()["start_validation_auc"] == history.start_validation_auc

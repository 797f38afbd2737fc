import pickle

import pytest
import torch
from kedro.io import DatasetError

from emm.datasets.torch_model import TorchModelDataset, save_pool_model
from emm.models.mlp import SingleTaskMLP
from emm.models.tabular import example_batch
from emm.pipelines.train_pool.pipeline import create_pipeline

from helpers import SIGNATURE, make_model


def test_model_trained_elsewhere_joins_the_pool_from_a_state_dict(tmp_path):
    trained = make_model("outside", "a", [32, 16, 8], seed=7)
    path = tmp_path / "pool" / "outside.pt"
    save_pool_model(path, trained.spec, trained.state_dict())
    loaded = TorchModelDataset(str(path)).load()
    assert isinstance(loaded, SingleTaskMLP) and loaded.task == "a"
    batch = example_batch(SIGNATURE, batch_size=4)
    trained.eval(), loaded.eval()
    assert torch.allclose(loaded(batch), trained(batch))


def test_model_trained_elsewhere_joins_the_pool_from_a_module(tmp_path):
    trained = make_model("outside", "a", [32, 16, 8], seed=7)
    save_pool_model(tmp_path / "outside.pt", trained.spec, trained)
    assert TorchModelDataset(str(tmp_path / "outside.pt")).load().spec == trained.spec


def test_weights_that_do_not_fit_the_spec_are_refused(tmp_path):
    trained = make_model("outside", "a", [32, 16, 8])
    other = make_model("other", "a", [32, 16, 4])
    with pytest.raises(ValueError, match="outside"):
        save_pool_model(tmp_path / "outside.pt", trained.spec, other.state_dict())
    assert not (tmp_path / "outside.pt").exists()


class Payload:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_a_file_holding_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"kind": "single_task_mlp", "spec": Payload()}, handle)
    with pytest.raises(DatasetError, match="weights-only"):
        TorchModelDataset(str(path)).load()
    assert "must never run" not in capsys.readouterr().out


def test_a_file_of_unknown_kind_is_refused(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"kind": "random_forest", "state_dict": {}}, path)
    with pytest.raises(DatasetError, match="random_forest"):
        TorchModelDataset(str(path)).load()


def test_pretrained_models_get_no_training_node():
    pipeline = create_pipeline(
        pool_models={
            "trained_here": {"task": "a", "hidden_dims": [8]},
            "trained_elsewhere": {"task": "a", "pretrained": True},
        }
    )
    names = {node.name for node in pipeline.nodes}
    assert "train_pool_model_trained_here" in names
    assert not any("trained_elsewhere" in name for name in names)
    assert "pool_model_trained_here" in pipeline.all_outputs()

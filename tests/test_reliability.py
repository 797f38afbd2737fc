"""Issue 10: outputs written whole or not at all, parameters checked before any node, pool files checked
before they are decomposed, the tracking store checked and named. (Whole-run checks on a tiny Census run,
the changed pool and the MLflow run states, are in test_pipeline_end_to_end.py.)"""

import copy
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from emm.datasets import CSVDataset, JSONDataset, TorchModelDataset
from emm.datasets.atomic import remove_stale_temporaries, write_atomically
from emm.hooks import TrackingStoreError, check_tracking_store
from emm.models.mlp import SingleTaskMLP
from emm.parameters import ParameterError, validate_parameters
from emm.pipeline_registry import project_parameters
from emm.pipelines.decompose.nodes import check_pool, decompose_pool, model_fingerprint
from emm.pipelines.evaluate.nodes import compute_aucs
from helpers import SIGNATURE, heterogeneous_pool, make_model


def files_in(folder):
    return sorted(path.name for path in folder.iterdir())


# Atomic outputs -------------------------------------------------------------------------------------------


def test_a_save_that_fails_half_way_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    dataset = JSONDataset(filepath=str(tmp_path / "aucs.json"))
    dataset.save({"mmoe": {"income": 0.95}})
    before = (tmp_path / "aucs.json").read_bytes()
    # json.dump streams: the first keys are written before the unserialisable value stops it.
    with pytest.raises(DatasetError):
        dataset.save({"mmoe": {"income": 0.96}, "broken": object()})
    assert (tmp_path / "aucs.json").read_bytes() == before
    assert files_in(tmp_path) == ["aucs.json"]


def test_a_csv_save_that_fails_keeps_the_previous_table(tmp_path):
    dataset = CSVDataset(filepath=str(tmp_path / "table.csv"))
    dataset.save(pd.DataFrame({"auc": [0.9, 0.8]}))
    before = (tmp_path / "table.csv").read_bytes()
    with pytest.raises(DatasetError):
        dataset.save("not a data frame")
    assert (tmp_path / "table.csv").read_bytes() == before
    assert files_in(tmp_path) == ["table.csv"]


def test_a_model_file_is_replaced_only_once_complete(tmp_path):
    path = tmp_path / "model.pt"
    write_atomically(path, lambda temporary: temporary.write_bytes(b"first"))

    def crash(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, crash)
    assert path.read_bytes() == b"first"
    assert files_in(tmp_path) == ["model.pt"]


def test_a_process_killed_while_saving_leaves_the_previous_file_and_the_next_run_removes_its_temporary(tmp_path):
    JSONDataset(filepath=str(tmp_path / "report.json")).save({"done": True})
    before = (tmp_path / "report.json").read_bytes()
    # A writer killed with SIGKILL half-way through: no Python cleanup runs in it.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from emm.datasets.atomic import write_atomically\n"
        "def write(temporary):\n"
        "    temporary.write_text('{\"done\": ')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "write_atomically(Path(sys.argv[1]), write)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "report.json")], capture_output=True)
    assert result.returncode == -9
    leftovers = [name for name in files_in(tmp_path) if name != "report.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".report.json.")
    assert (tmp_path / "report.json").read_bytes() == before
    assert remove_stale_temporaries(tmp_path) == [tmp_path / leftovers[0]]
    assert files_in(tmp_path) == ["report.json"]


def test_temporaries_of_a_live_process_are_kept(tmp_path):
    own = tmp_path / f".aucs.json.{os.getpid()}.x1y2.tmp"
    own.write_text("{")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = tmp_path / f".table.csv.{live.pid}.abcd.tmp"
        other.write_text("a,")
        assert remove_stale_temporaries(tmp_path) == []
        assert own.exists() and other.exists()
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(tmp_path) == [other]


def test_json_outputs_write_an_undefined_auc_as_null(tmp_path):
    JSONDataset(filepath=str(tmp_path / "aucs.json")).save({"emm": {"income": 0.9, "rare": float("nan")}, "inf": [float("inf")]})
    text = (tmp_path / "aucs.json").read_text()
    parsed = json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in JSON output"))
    assert parsed == {"emm": {"income": 0.9, "rare": None}, "inf": [None]}


def test_a_task_with_one_class_in_the_test_set_is_named_and_its_auc_left_undefined(caplog):
    predictions = pd.DataFrame(
        {
            "label.income": [0, 1, 0, 1],
            "label.rare": [0, 0, 0, 0],
            "mmoe.income": [0.1, 0.9, 0.2, 0.8],
            "mmoe.rare": [0.1, 0.2, 0.3, 0.4],
        }
    )
    with caplog.at_level(logging.WARNING):
        aucs = compute_aucs(predictions)
    assert aucs["mmoe"]["income"] == 1.0 and np.isnan(aucs["mmoe"]["rare"])
    assert "Test labels of task rare have one class" in caplog.text


# Parameters ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_parameters():
    return project_parameters()


def test_the_project_parameters_fit_the_schema(base_parameters):
    validate_parameters(base_parameters)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["census", "pool", "models", "income_small", "dropuot"], 0.1, "census.pool.models.income_small.dropuot: unknown key"),
        (["census", "training", "progress_bar"], "false", "census.training.progress_bar: 'false' is a str, expected bool"),
        (["census", "training", "max_epochs"], "3", "census.training.max_epochs: '3' is a str, expected int"),
        (["census", "fuse", "model", "use_mtm"], "true", "census.fuse.model.use_mtm: 'true' is a str, expected bool"),
        (["census", "pool", "models", "income_small", "task"], "incom", "census.pool.models.income_small.task: 'incom' is not one of"),
        (["census_3tasks", "training", "max_epoch"], 3, "census_3tasks.training.max_epoch: unknown training setting"),
        (["census", "refine", "emm_share"], 1.5, "census.refine.emm_share: must be between 0 and 1 or 'validation'"),
        (["census", "data_processing", "piecewise_linear", "bins"], 0, "census.data_processing.piecewise_linear.bins: must be at least 1"),
    ],
)
def test_a_bad_parameter_is_named_by_its_key_path(base_parameters, path, value, message):
    parameters = copy.deepcopy(base_parameters)
    block = parameters
    for key in path[:-1]:
        block = block[key]
    block[path[-1]] = value
    with pytest.raises(ParameterError) as raised:
        validate_parameters(parameters)
    assert message in str(raised.value)


# Pool files --------------------------------------------------------------------------------------------------

SCHEMA = {
    "categorical": [{"name": name, "vocabulary_size": size} for name, size in SIGNATURE["categorical"]],
    "dense": SIGNATURE["dense"],
    "tasks": [{"name": "a"}, {"name": "b"}],
}
DECLARED = {"a_small": {"task": "a"}, "a_large": {"task": "a"}, "b_small": {"task": "b"}, "b_wide": {"task": "b"}}


def test_a_pool_that_fits_its_declaration_and_schema_is_decomposed():
    components, report = decompose_pool({"max_levels": 3}, {"models": DECLARED}, SCHEMA, **heterogeneous_pool())
    assert sorted(report["pool_fingerprint"]) == sorted(DECLARED)
    assert len(components.levels) >= 2


def test_a_pool_file_of_another_task_than_declared_is_refused():
    pool = heterogeneous_pool()
    declared = {**DECLARED, "a_large": {"task": "b"}}
    with pytest.raises(ValueError, match=r"'a_large' is declared for task 'b' \(pool.models.a_large.task\)"):
        check_pool(pool, declared, SCHEMA)


def test_a_pool_file_of_a_task_the_data_does_not_have_is_refused():
    pool = {**heterogeneous_pool(), "c_model": make_model("c_model", "c", [32, 16, 8])}
    with pytest.raises(ValueError, match=r"'c_model' predicts task 'c', which is not one of the data's \['a', 'b'\]"):
        decompose_pool({"max_levels": 3}, {"models": {**DECLARED, "c_model": {"task": "c"}}}, SCHEMA, **pool)


@pytest.mark.parametrize(
    ("schema_change", "message"),
    [
        (lambda schema: schema["categorical"][1].update(vocabulary_size=9), r"categorical column 1 is \['shape', 4\] in the model, \['shape', 9\]"),
        (lambda schema: schema["dense"].reverse(), "dense column 0 is 'weight' in the model, 'height' in the schema"),
        (lambda schema: schema["dense"].append("age"), "2 dense columns in the model, 3 in the schema"),
    ],
)
def test_a_pool_file_reading_other_features_than_the_schema_is_refused(schema_change, message):
    schema = copy.deepcopy(SCHEMA)
    schema_change(schema)
    with pytest.raises(ValueError, match=message):
        check_pool(heterogeneous_pool(), DECLARED, schema)


def test_a_hand_written_spec_whose_layers_do_not_chain_is_refused_by_model_and_layer():
    spec = copy.deepcopy(make_model("a_small", "a", [32, 16, 8]).spec)
    linears = [layer for layer in spec["layers"] if layer["type"] == "Linear"]
    linears[1]["in_features"] = 31
    with pytest.raises(ValueError, match=r"pool model 'a_small': layer \d+ \(Linear\) has in_features=31 but the layer before it outputs width 32"):
        SingleTaskMLP(spec)


def test_a_model_file_larger_than_its_bound_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "a_small.pt"
    TorchModelDataset(str(path)).save(make_model("a_small", "a", [32, 16, 8]))
    size = path.stat().st_size
    assert TorchModelDataset(str(path), max_bytes=size).load().task == "a"
    with pytest.raises(DatasetError, match=rf"a_small.pt is {size:,} bytes, more than the {size - 1:,}"):
        TorchModelDataset(str(path), max_bytes=size - 1).load()


def test_the_fingerprint_is_that_of_the_weights_and_survives_a_save_and_load(tmp_path):
    model = make_model("a_small", "a", [32, 16, 8], seed=1)
    TorchModelDataset(str(tmp_path / "m.pt")).save(model)
    assert model_fingerprint(TorchModelDataset(str(tmp_path / "m.pt")).load()) == model_fingerprint(model)
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3
    assert model_fingerprint(TorchModelDataset(str(tmp_path / "m.pt")).load()) != model_fingerprint(model)


# Tracking store ----------------------------------------------------------------------------------------------


def test_a_folder_named_like_the_tracking_store_is_refused_by_name(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(TrackingStoreError, match=r"sqlite:///mlflow.db \(.*mlflow.db\) is a folder, not an SQLite file"):
        check_tracking_store("sqlite:///mlflow.db", tmp_path)


def test_a_tracking_store_that_is_not_sqlite_is_refused_by_name(tmp_path):
    (tmp_path / "mlflow.db").write_text("runs: []\n")
    with pytest.raises(TrackingStoreError, match=r"mlflow.db\) is not an SQLite database"):
        check_tracking_store("sqlite:///mlflow.db", tmp_path)


def test_a_tracking_store_in_a_missing_folder_is_refused_by_name(tmp_path):
    with pytest.raises(TrackingStoreError, match=r"tracking/mlflow.db\): its folder .*tracking does not exist"):
        check_tracking_store("sqlite:///tracking/mlflow.db", tmp_path)


def test_a_new_or_existing_sqlite_store_passes(tmp_path):
    check_tracking_store("sqlite:///mlflow.db", tmp_path)
    import sqlite3

    sqlite3.connect(tmp_path / "mlflow.db").execute("create table t (x)").connection.close()
    check_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "elsewhere")

"""Serving (docs/serving.md): the census fused model logged by the census_serving PipelineML, registered as
emm_census with alias champion, and served by `mlflow models serve` on real raw rows. Runs the tiny census
project once (the census pipeline, then census_serving), MLflow in the project's own SQLite store."""

import copy
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_mlflow.pipeline.pipeline_ml import PipelineML
from mlflow import MlflowClient
from mlflow.tracking._model_registry import utils as registry_uri_state
from mlflow.tracking._tracking_service import utils as tracking_uri_state
from sklearn.model_selection import train_test_split

from conftest import PROJECT_ROOT
from emm.datasets.census_income import read_census_file
from emm.parameters import ParameterError, validate_parameters
from emm.pipelines.data_processing.nodes import encode_features, encode_table, fit_encoders, label_column
from emm.datasets import served_model
from emm.pipelines.serving.nodes import ServingInputError, predict_probabilities, serving_rows
from emm.pipelines.serving.registry import CHAMPION, SCORE_TAG, ServingRunError, becomes_champion, mean_validation_auc
from helpers import tiny_project

MODEL = "emm_census"
TASKS = ["income", "never_married"]
TRAINING_REPORT = ("data", "08_reporting", "census", "emm_plus_training.json")


def run(root, pipeline_name):
    with KedroSession.create(project_path=root) as session:
        session.run(pipeline_name=pipeline_name)
        return session.load_context().catalog


def champion_version(client) -> str:
    return client.get_model_version_by_alias(MODEL, CHAMPION).version


@pytest.fixture(scope="module")
def served(tmp_path_factory, census_slice):
    """The tiny census project after `kedro run --pipelines=census` then `--pipelines=census_serving`.
    MLflow's process-wide state (tracking and registry URIs, their environment variables, active runs)
    is put back afterwards, so that no other test module tracks into this store."""
    saved_uris = tracking_uri_state._tracking_uri, registry_uri_state._registry_uri
    monkeypatch = pytest.MonkeyPatch()
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)  # records the value to put back
    root = tiny_project(tmp_path_factory.mktemp("serving"), PROJECT_ROOT, ["census"])
    # An absolute store: MLflow caches one store per URI string, so the project's relative sqlite:///mlflow.db
    # used here first would keep pointing at this project's file for the end-to-end project run after it.
    (root / "conf" / "local" / "mlflow.yml").write_text(
        yaml.safe_dump({"server": {"mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}})
    )
    monkeypatch.chdir(root)
    monkeypatch.setenv("EMM_CENSUS_DIR", str(census_slice))
    bootstrap_project(root)
    try:
        run(root, "census")
        catalog = run(root, "census_serving")
        yield root, catalog, MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(saved_uris[0])
        mlflow.set_registry_uri(saved_uris[1])
        monkeypatch.undo()


@pytest.fixture(scope="module")
def registrations(served):
    """Champion after each registration: the first run's, a second run with the same validation AUC, and a
    third whose training report says 0.001 better on every task (the report is put back afterwards)."""
    root, _, client = served
    champions = [champion_version(client)]
    run(root, "census_serving")
    champions.append(champion_version(client))
    report_file = root.joinpath(*TRAINING_REPORT)
    original = report_file.read_text()
    report = json.loads(original)
    report["best_validation_auc"] = {task: auc + 0.001 for task, auc in report["best_validation_auc"].items()}
    report_file.write_text(json.dumps(report))
    try:
        run(root, "census_serving")
    finally:
        report_file.write_text(original)
    champions.append(champion_version(client))
    return champions


def test_census_serving_is_a_pipeline_ml_outside_the_default_pipeline(served):
    serving = pipelines["census_serving"]
    assert isinstance(serving, PipelineML)
    assert serving.input_name == "census.serving_input"
    assert not {node.name for node in serving.nodes} & {node.name for node in pipelines["__default__"].nodes}
    assert serving.inference.outputs() == {"census.serving_probabilities"}


def test_serving_run_with_other_pipelines_is_refused_before_any_node_naming_the_command(served):
    root, _, client = served
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))
    with KedroSession.create(project_path=root) as session:
        with pytest.raises(ServingRunError, match=r"Run the dataset's pipeline first, then `kedro run --pipelines=census_serving` alone"):
            session.run(pipeline_names=["census_serving", "census"])
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions


def test_the_model_is_logged_with_its_signature_and_input_example(served):
    root, catalog, client = served
    version = client.get_model_version_by_alias(MODEL, CHAMPION)
    info = mlflow.models.get_model_info(f"models:/{MODEL}/{version.version}")
    encoders = catalog.load("census.encoders")
    inputs = {column.name: column.type.to_numpy().kind for column in info.signature.inputs.inputs}
    assert set(inputs) == set(encoders["categorical"]) | set(encoders["dense"])
    assert {inputs[column] for column in encoders["dense"]} == {"f"}
    assert not {"income", "marital stat", "instance weight"} & set(inputs)  # labels and dropped: not inputs
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version.version}")
    example = model.input_example
    pd.testing.assert_frame_equal(example.reset_index(drop=True), catalog.load("census.serving_input"), check_dtype=False)
    assert len(example) == 5


def test_the_first_version_is_registered_as_champion_with_its_validation_aucs(served):
    root, catalog, client = served
    first = client.get_model_version(MODEL, "1")
    card = catalog.load("census.served_model_card")
    report = json.loads(root.joinpath(*TRAINING_REPORT).read_text())
    assert card["validation_auc"] == {task: report["best_validation_auc"][task] for task in TASKS}
    for task in TASKS:
        assert float(first.tags[f"validation_auc.{task}"]) == pytest.approx(card["validation_auc"][task])
    assert float(first.tags[SCORE_TAG]) == pytest.approx(np.mean(list(card["validation_auc"].values())))
    assert first.tags["fused_model"] == "emm_plus"


def test_champion_moves_only_on_strict_improvement(registrations, served):
    assert registrations == [1, 1, 3]  # a tie keeps version 1; 0.001 better moves it to version 3
    _, _, client = served
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 3


@pytest.mark.parametrize(
    "candidate, champion, moves",
    [(0.9, None, True), (0.9, 0.9, False), (0.89, 0.9, False), (0.9001, 0.9, True), (math.nan, None, False), (0.9, math.nan, True)],
)
def test_the_champion_rule(candidate, champion, moves):
    assert becomes_champion(candidate, champion) is moves


def test_the_score_is_the_mean_over_tasks_with_a_defined_auc():
    assert mean_validation_auc({"a": 0.8, "b": 0.9}) == pytest.approx(0.85)
    assert mean_validation_auc({"a": 0.8, "b": None, "c": math.nan}) == pytest.approx(0.8)
    assert math.isnan(mean_validation_auc({"a": None}))


def test_bad_rows_are_refused_naming_the_column():
    encoders = {"categorical": {"colour": ["blue", "red"]}, "dense": {"weight": {}}, "tasks": []}
    good = pd.DataFrame({"colour": ["red"], "weight": ["2.5"], "label": [1]})
    assert serving_rows(good, encoders).to_dict("list") == {"colour": ["red"], "weight": [2.5]}
    for bad, column in (
        (good.drop(columns="weight"), "weight"),
        (good.assign(colour=[3]), "colour"),
        (good.assign(weight=["heavy"]), "weight"),
        (good.assign(weight=[None]), "weight"),
        (good.assign(weight=[math.inf]), "weight"),
    ):
        with pytest.raises(ServingInputError, match=f"'?{column}'?") as raised:
            serving_rows(bad, encoders)
        assert raised.value.get_http_status_code() == 400


def test_rows_sent_as_numbers_are_encoded_as_the_raw_files_text_is():
    params = {
        "tasks": [{"name": "t", "column": "label", "positive": ["yes"]}],
        "dense_columns": ["gain"],
        "log_scaled_columns": ["gain"],
        "value_codes": {"columns": ["gain"], "min_count": 1},
    }
    raw = pd.DataFrame({"colour": ["red", "blue", "red", "blue"], "gain": ["0", "15024", "0", "7"], "label": ["yes", "no", "no", "yes"]})
    encoders = fit_encoders(raw, params)
    as_text = encode_features(raw, encoders)
    assert as_text["gain="].tolist() == [1, 3, 1, 2]  # the exact values 0, 7 and 15024 coded in numeric order
    pd.testing.assert_frame_equal(encode_features(serving_rows(raw, encoders), encoders), as_text)


def test_a_typo_under_serving_is_named_by_its_key_path():
    from omegaconf import OmegaConf

    parameters = OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / "conf" / "base" / "parameters_census.yml"))
    validate_parameters(parameters)
    parameters["census"]["serving"]["fused_modle"] = "emm"
    parameters["census_3tasks"]["serving"] = {"fused_model": "emm_plus"}
    del parameters["census_3tasks"]["refine"]
    with pytest.raises(ParameterError) as raised:
        validate_parameters(parameters)
    assert "census.serving.fused_modle: unknown key" in str(raised.value)
    assert "census_3tasks.serving.fused_model: 'emm_plus' is trained only with a refine section" in str(raised.value)


# --- `mlflow models serve` ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(served, registrations):
    """`mlflow models serve` of emm_census@champion on 127.0.0.1, as docs/serving.md starts it (its logging
    config included), killed (with its workers) at the end."""
    root, _, _ = served
    port = free_port()
    venv_bin = os.path.dirname(sys.executable)
    environment = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn, started by mlflow
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "KEDRO_LOGGING_CONFIG": "conf/serving_logging.yml",
    }
    command = [os.path.join(venv_bin, "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@{CHAMPION}"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not come up: {(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and its uvicorn workers
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def post(url: str, rows: pd.DataFrame) -> tuple[int, dict]:
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def test_rows(served, census_slice):
    """The first raw rows of the test split, in its order (the split redone on the raw file, checked by
    encoding them), full UCI layout, dense columns as numbers; and the pipeline's own predictions for them."""
    _, catalog, _ = served
    params = catalog.load("params:census.data_processing")
    encoders = catalog.load("census.encoders")
    raw = read_census_file(census_slice / "census-income.test.gz")
    labels = encode_table(raw, encoders)[label_column(TASKS[0])]
    _, raw_test = train_test_split(raw, train_size=params["validation_fraction"], random_state=params["seed"], stratify=labels)
    rows = raw_test.head(40).reset_index(drop=True)
    test = catalog.load("census.test").read()
    pd.testing.assert_frame_equal(encode_table(rows, encoders), test.head(40)[encode_table(rows, encoders).columns])
    for column in encoders["dense"]:
        rows[column] = pd.to_numeric(rows[column])
    predictions = catalog.load("census.test_predictions").head(40)
    return rows, predictions


def test_the_served_model_gives_the_pipelines_own_test_predictions(server, test_rows):
    rows, predictions = test_rows
    status, body = post(server, rows)  # the full UCI rows: label and dropped columns are ignored
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    for task in TASKS:  # served through the inference form: logits within 1e-5 of the eager model's
        np.testing.assert_allclose(served[task], predictions[f"emm_plus.{task}"], rtol=0, atol=1e-5)


def test_the_served_model_answers_through_its_inference_form_built_once(served, monkeypatch):
    root, catalog, _ = served
    builds, build = [], served_model.inference_form

    def counted_form(model):
        builds.append(model)
        return build(model)

    monkeypatch.setattr(served_model, "inference_form", counted_form)
    schema, features = catalog.load("census.feature_schema"), catalog.load("census.test").read().head(200)
    model = catalog.load("census.served_emm_plus")
    eager = predict_probabilities(features, schema, model, use_inference_form=False)
    # A model logged before the model was shared hands the node the module itself: it answers eagerly
    pd.testing.assert_frame_equal(predict_probabilities(features, schema, model.model), eager)
    through_form = [predict_probabilities(features, schema, copy.deepcopy(model)) for _ in range(2)]
    assert builds == [model.model]  # the first request builds it; a request's deep copy is the model itself
    for answer in through_form:
        pd.testing.assert_frame_equal(answer, eager, check_exact=False, rtol=0, atol=1e-5)
        assert (answer - eager).abs().to_numpy().max() > 0  # answered by the form, not by the eager model
    # The logged pyfunc model: kedro-mlflow deep-copies its catalog every request, the model is shared
    builds.clear()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    example = pd.read_parquet(root / "data" / "05_model_input" / "census" / "serving_input_example.parquet")
    answers = [pyfunc.predict(example) for _ in range(3)]
    assert len(builds) == 1
    for answer in answers:
        pd.testing.assert_frame_equal(answer, answers[0])


def test_serving_speed_times_the_registered_models_requests(served):
    spec = importlib.util.spec_from_file_location("serving_speed", PROJECT_ROOT / "scripts" / "serving_speed.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    latency_ms, rows_per_second = script.serving_speed(f"models:/{MODEL}@{CHAMPION}", calls=3, rows=50)
    assert 0 < latency_ms < 60_000 and rows_per_second > 0


def test_the_server_logs_no_line_per_request_with_the_serving_logging_config(server, served, test_rows):
    root, _, _ = served
    rows, _ = test_rows
    for _ in range(2):
        assert post(server, rows.head(1))[0] == 200
    log = (root / "serve.log").read_text()
    assert "census.served_emm_plus" not in log and "predict_probabilities" not in log  # kedro's INFO lines


def test_bad_requests_get_a_400_naming_the_column_and_the_server_keeps_serving(server, test_rows):
    rows, predictions = test_rows
    wrong_number = rows.astype({"age": object})
    wrong_number.loc[0, "age"] = "forty"
    for bad, column in (
        (rows.drop(columns="education"), "education"),
        (wrong_number, "age"),
        (rows.assign(**{"detailed industry recode": 5}), "detailed industry recode"),
    ):
        status, body = post(server, bad)
        assert 400 <= status < 500, body
        assert column in body["message"], body
    status, body = post(server, rows.head(3))
    assert status == 200, body
    np.testing.assert_allclose(pd.DataFrame(body["predictions"])["income"], predictions["emm_plus.income"].head(3), atol=1e-6)

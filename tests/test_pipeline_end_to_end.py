"""The whole default pipeline through a KedroSession, on a slice of the real files, MLflow in a temporary store."""

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from emm.datasets import TorchModelDataset
from emm.datasets.torch_model import save_pool_model
from emm.hooks import PoolChangedError, TrackingStoreError
from emm.parameters import ParameterError
from conftest import PROJECT_ROOT, head_lines
from helpers import tiny_project

NAMESPACES = ("census", "census_3tasks", "census_4tasks")
TASKS = {
    "census": ["income", "never_married"],
    "census_3tasks": ["income", "never_married", "bachelor_or_higher"],
    "census_4tasks": ["income", "never_married", "bachelor_or_higher", "full_time"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory, census_slice):
    root = tiny_project(tmp_path_factory.mktemp("project"), PROJECT_ROOT, NAMESPACES)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(root)
    monkeypatch.setenv("EMM_CENSUS_DIR", str(census_slice))
    bootstrap_project(root)
    yield root
    monkeypatch.undo()


def run(root, **kwargs):
    with KedroSession.create(project_path=root) as session:
        session.run(**kwargs)
        return session.load_context().catalog


@pytest.fixture(scope="module")
def first_run(project):
    catalog = run(project)
    return project, catalog


def persistent_outputs(catalog):
    outputs = sorted(pipelines["__default__"].all_outputs())
    assert outputs, "the default pipeline has no outputs"
    return [name for name in outputs if "metrics" not in name]


def test_every_catalogued_output_exists(first_run):
    _, catalog = first_run
    for name in persistent_outputs(catalog):
        assert catalog.exists(name), name
    assert "census.pool_model_income_small" in pipelines["__default__"].all_outputs()


def test_aucs_are_catalogued_by_model_then_task(first_run):
    root, catalog = first_run
    aucs = json.loads((root / "data" / "08_reporting" / "census" / "test_aucs.json").read_text())
    pool = {"income_small", "income_large", "never_married_small", "never_married_small_b", "never_married_large"}
    baselines = {"shared_bottom", "mmoe", "ple", "aitm", "adatt"}
    ablations = {"ablation_baseline", "ablation_baseline_mtm", "ablation_baseline_p", "ablation_paper_mtm_query"}
    assert set(aucs) == pool | baselines | ablations | {"emm", "emm_plus"}
    for model in baselines | ablations | {"emm", "emm_plus"}:
        assert set(aucs[model]) == {"income", "never_married"}, model
    assert set(aucs["income_small"]) == {"income"}
    for scores in aucs.values():
        for auc in scores.values():
            assert 0 < auc < 1
    assert catalog.load("census.test_aucs") == aucs
    table = catalog.load("census.table_1")
    assert list(table["model"]) == [*sorted(pool, key=list(aucs).index), "pool average", *sorted(baselines, key=list(aucs).index), "emm", "emm_plus"]
    assert table.loc[table["model"] == "emm", "gain_income"].item() == pytest.approx(
        aucs["emm"]["income"] - table.loc[table["model"] == "pool average", "auc_income"].item()
    )


def test_every_run_has_its_own_tasks_and_labels_are_never_features(first_run):
    _, catalog = first_run
    for namespace, tasks in TASKS.items():
        schema = catalog.load(f"{namespace}.feature_schema")
        assert [task["name"] for task in schema["tasks"]] == tasks
        features = {column["name"] for column in schema["categorical"]} | set(schema["dense"])
        assert not features & {task["column"] for task in schema["tasks"]}, namespace
        assert set(catalog.load(f"{namespace}.test_aucs")["emm"]) == set(tasks)
        assert set(catalog.load(f"{namespace}.test_aucs")["emm_plus"]) == set(tasks)


def test_report_writes_every_table_and_figure(first_run):
    root, catalog = first_run
    reporting = root / "data" / "08_reporting"
    for namespace in NAMESPACES:
        tables = ["table_1.csv", "table_1.md", "cost_table.md", "fusion_choices.csv", "fusion_choices.md"]
        figures = ["roc_curves.png", "gate_weights.png", "fusion_choices.png"]
        if namespace == "census":
            tables += ["table_2.csv", "table_2.md"]
        for name in tables:
            assert (reporting / namespace / name).stat().st_size > 50, (namespace, name)
        for name in figures:
            content = (reporting / namespace / name).read_bytes()
            assert content.startswith(b"\x89PNG") and len(content) > 10_000, (namespace, name)
    assert (reporting / "adaptability" / "figure_3.png").read_bytes().startswith(b"\x89PNG")
    figure_3 = catalog.load("adaptability.table")
    assert set(figure_3["n_tasks"]) == {2, 3, 4}
    assert {"EMM", "EMM+", "pool average", "best pool model"} <= set(figure_3["model"])

    table_2 = catalog.load("census.table_2")
    assert list(table_2["label"]) == ["baseline", "baseline+MTM", "baseline+p", "EMM, eq. 6 query", "EMM", "EMM+"]
    assert table_2["gain_income"].iloc[0] == 0

    choices = catalog.load("census_4tasks.fusion_choices")
    shares = choices.groupby(["level", "task"])["share"].sum()
    assert shares.to_numpy() == pytest.approx(1.0)
    assert not (choices["task"] == choices["picks"]).any()

    costs = catalog.load("census.model_costs")
    assert {"emm", "mmoe", "ple", "pool (all models)"} <= set(costs["model"])
    assert (costs["rows_per_second"] > 0).all()
    emm = costs[costs["model"] == "emm"].iloc[0]
    assert emm["frozen_parameters"] > 0 and emm["trainable_parameters"] > 0
    assert (costs.loc[costs["role"] == "baseline", "frozen_parameters"] == 0).all()


def test_figures_are_written(first_run):
    root, _ = first_run
    for figure in ("roc_curves.png", "gate_weights.png"):  # drawn by the report stage
        content = (root / "data" / "08_reporting" / "census" / figure).read_bytes()
        assert content.startswith(b"\x89PNG") and len(content) > 10_000


def test_mlflow_run_has_metrics_and_artifacts(first_run):
    root, _ = first_run
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["emm"], output_format="list")
    assert len(runs) == 1  # one `kedro run` so far, one MLflow run
    latest = runs[0]
    metrics = latest.data.metrics
    assert 0 < metrics["census.test_auc.emm.income"] < 1
    assert "census.pool.income_small.best_validation_auc.income" in metrics
    assert "census.emm.train_loss" in metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id, "census")}
    assert {"census/test_aucs.json", "census/report", "census/pool", "census/baselines", "census/ablations"} <= artifacts
    report = {a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id, "census/report")}
    assert {"census/report/table_1.md", "census/report/table_2.md", "census/report/roc_curves.png"} <= report
    assert 0 < metrics["census.test_auc.mmoe.never_married"] < 1
    assert metrics["census.rows_per_second.emm"] > 0
    assert "census_4tasks.test_auc.emm.full_time" in metrics
    pool = {a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id, "census/pool")}
    assert "census/pool/income_small.pt" in pool


def test_rerun_with_only_missing_outputs_skips_done_work(first_run):
    root, _ = first_run
    models = sorted((root / "data" / "06_models" / "census").rglob("*.pt"))
    stamps = {path: path.stat().st_mtime_ns for path in models}
    run(root, only_missing_outputs=True)
    assert {path: path.stat().st_mtime_ns for path in models} == stamps


def test_bad_raw_file_stops_the_run_and_keeps_earlier_outputs(first_run, tmp_path, census_slice):
    root, _ = first_run
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = head_lines(census_slice / "census-income.data.gz", 100)
    lines[41] = ",".join(lines[41].split(",")[:20]) + "\n"
    with gzip.open(broken / "census-income.data.gz", "wt") as handle:
        handle.writelines(lines)
    shutil.copy(census_slice / "census-income.test.gz", broken)
    before = {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("EMM_CENSUS_DIR", str(broken))
    try:
        with pytest.raises(DatasetError, match=r"census-income.data.gz: line 42 has 20 non-empty fields"):
            run(root)
    finally:
        monkeypatch.undo()
    after = {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    assert after == before


def test_results_notebook_runs_headless_on_the_tiny_run(first_run):
    root, _ = first_run
    import nbformat
    from nbclient import NotebookClient

    (root / "notebooks").mkdir(exist_ok=True)
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root / "notebooks")}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 5  # costs chart, ROC, Figure 3, fusion choices, gate weights
    markdown = "".join(output["data"].get("text/markdown", "") for output in outputs if "data" in output)
    assert "| EMM | emm |" in markdown and "baseline+MTM" in markdown and "picks full_time" in markdown


# Issue 10 on the tiny run: the last tests of the module, since they change the pool and kill runs.


def data_snapshot(root):
    return {path: path.read_bytes() for path in (root / "data").rglob("*") if path.is_file()}


def mlflow_runs(root):
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_runs(
        [MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_experiment_by_name("emm").experiment_id]
    )


def test_a_misspelt_parameter_stops_the_run_before_any_node_or_mlflow_run(first_run):
    root, _ = first_run
    before, runs = data_snapshot(root), len(mlflow_runs(root))
    with KedroSession.create(project_path=root, runtime_params={"census": {"pool": {"models": {"income_small": {"dropuot": 0.2}}}}}) as session:
        with pytest.raises(ParameterError, match=r"census.pool.models.income_small.dropuot: unknown key"):
            session.run(pipeline_name="census")
    assert data_snapshot(root) == before
    assert len(mlflow_runs(root)) == runs


def test_a_folder_named_mlflow_db_fails_at_once_naming_it_and_nothing_is_lost(first_run):
    root, _ = first_run
    before = data_snapshot(root)
    (root / "mlflow.db").rename(root / "mlflow.db.kept")
    (root / "mlflow.db").mkdir()
    try:
        started = time.monotonic()
        with pytest.raises(TrackingStoreError, match=r"sqlite:///mlflow.db \(.*mlflow.db\) is a folder"):
            run(root, pipeline_name="census")
        assert time.monotonic() - started < 30  # MLflow alone retried for about 100 s
    finally:
        (root / "mlflow.db").rmdir()
        (root / "mlflow.db.kept").rename(root / "mlflow.db")
    assert data_snapshot(root) == before


@pytest.fixture
def external_model(first_run):
    """A pool model trained elsewhere (income_large's weights, perturbed), declared in conf/local."""
    root, _ = first_run
    parameters_file = root / "conf" / "local" / "parameters.yml"
    original = parameters_file.read_text()
    parameters = yaml.safe_load(original)
    parameters["census"]["pool"]["models"]["income_external"] = {"task": "income", "pretrained": True}
    parameters_file.write_text(yaml.safe_dump(parameters))
    path = root / "data" / "06_models" / "census" / "pool" / "income_external.pt"
    source = TorchModelDataset(str(path.with_name("income_large.pt"))).load()
    torch.manual_seed(7)
    weights = {key: value + 0.01 * torch.randn_like(value) if value.is_floating_point() else value for key, value in source.state_dict().items()}
    save_pool_model(path, {**source.spec, "name": "income_external"}, weights)
    bootstrap_project(root)  # the pipelines are made from the parameters
    yield root, path
    parameters_file.write_text(original)
    path.unlink(missing_ok=True)
    bootstrap_project(root)


def test_a_pool_model_added_later_is_noticed_and_the_command_named_rebuilds_on_it(external_model):
    root, path = external_model
    models = root / "data" / "06_models" / "census"
    components = models / "components.pt"
    kept = {file: file.read_bytes() for file in [*(models / "pool").glob("income_[sl]*.pt"), *(models / "baselines").glob("*.pt")]}
    assert kept
    before = components.read_bytes()
    with pytest.raises(PoolChangedError, match=r"added: income_external") as raised:
        run(root, only_missing_outputs=True)
    assert components.read_bytes() == before
    command = re.search(r"`kedro run --pipelines=(\w+) --from-nodes=(\S+)`", str(raised.value))
    assert command, str(raised.value)
    run(root, pipeline_name=command[1], from_nodes=command[2].split(","))
    report = json.loads((root / "data" / "08_reporting" / "census" / "decomposition_report.json").read_text())
    assert "income_external" in report["pool_fingerprint"]
    assert components.read_bytes() != before
    assert {file: file.read_bytes() for file in kept} == kept  # trained pool models and baselines are kept
    stamp = components.stat().st_mtime_ns
    run(root, only_missing_outputs=True)  # the pool is the decomposed one again: nothing to redo
    assert components.stat().st_mtime_ns == stamp

    # The same file replaced by a model of another task than declared: refused, components.pt untouched.
    other_task = TorchModelDataset(str(path)).load()
    save_pool_model(path, {**other_task.spec, "task": "never_married"}, other_task.state_dict())
    before = components.read_bytes()
    with pytest.raises(ValueError, match=r"'income_external' is declared for task 'income'"):
        run(root, pipeline_name="census", node_names=["census.decompose_pool"])
    assert components.read_bytes() == before


def start_training(root, census_slice):
    """A `kedro run` of one pool model that trains until stopped; returns once its MLflow run is RUNNING."""
    environment = {**os.environ, "EMM_CENSUS_DIR": str(census_slice), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [Path(sys.executable).with_name("kedro"), "run", "--pipelines=census", "--nodes=census.train_pool_model_income_small",
         "--params=census.training.max_epochs=100000,census.training.patience=100000"],
        cwd=root, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        mine = [r for r in mlflow_runs(root) if r.data.tags.get("emm.pid") == str(process.pid)]
        if mine and mine[0].info.status == "RUNNING":
            time.sleep(2)  # into the node
            return process, mine[0].info.run_id
        if process.poll() is not None:
            pytest.fail(f"kedro run ended early: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.5)
    process.kill()
    pytest.fail("no RUNNING MLflow run within 120 s")


def test_interrupted_and_killed_runs_are_recorded_killed_and_lose_no_output(first_run, census_slice):
    root, _ = first_run
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    before = data_snapshot(root)

    interrupted, interrupted_id = start_training(root, census_slice)
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=60) != 0
    run_info = client.get_run(interrupted_id)
    assert run_info.info.status == "KILLED"
    assert run_info.data.tags["emm.stopped_by"] == "SIGINT"

    killed, killed_id = start_training(root, census_slice)
    killed.kill()
    killed.wait(timeout=60)
    assert client.get_run(killed_id).info.status == "RUNNING"  # nothing could record it
    run(root, pipeline_name="census", node_names=["census.log_pool_metrics_income_small"])
    run_info = client.get_run(killed_id)
    assert run_info.info.status == "KILLED"
    assert "process gone" in run_info.data.tags["emm.stopped_by"]
    assert data_snapshot(root) == before

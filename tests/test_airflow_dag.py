"""Scheduling (README, "Scheduling"): the Airflow DAG `make airflow-dag` generates, loaded by Airflow's DagBag and
checked against the Kedro pipeline; and one MLflow run shared by the `kedro run`s of one scheduled run.

Airflow, Kedro projects and MLflow set process-wide state when imported or set up (Airflow's settings and logging,
Kedro's project settings and pipelines, MLflow's tracking URI and active run). Everything that sets any of it
runs in a subprocess of its own, so nothing here reaches the test modules that run after this one."""

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT

# find_spec, not pytest.importorskip: importing airflow here would set up Airflow's settings and logging in the
# test process.
if find_spec("airflow") is None or find_spec("kedro_airflow") is None:
    pytest.skip("Airflow is not installed (make airflow-install)", allow_module_level=True)

from mlflow import MlflowClient  # noqa: E402
from slugify import slugify  # noqa: E402  (kedro-airflow names a node's task with it)

SETUP_TASK, TEARDOWN_TASK = "start_mlflow_run", "end_mlflow_run"
NAMESPACES = ("census", "census_3tasks", "census_4tasks")  # the census runs of the default pipeline

# Run in a subprocess from the project copy: the DAG as Airflow's DagBag loads it, and the Kedro pipeline it was
# generated from.
DESCRIBE = """
import json, sys
from pathlib import Path
from airflow.models import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("emm")
description = {"import_errors": {str(path): str(error) for path, error in bag.import_errors.items()}}
if dag is not None:
    description["dag"] = {
        "schedule": str(dag.schedule), "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
        "retries": dag.default_args["retries"],
        "tasks": {
            task.task_id: {
                "upstream": sorted(task.upstream_task_ids), "is_setup": task.is_setup,
                "is_teardown": task.is_teardown, "trigger_rule": task.trigger_rule.value,
            }
            for task in dag.tasks
        },
    }

from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
from kedro.framework.project import pipelines
pipeline = pipelines["__default__"]
description["nodes"] = {
    node.name: sorted(parent.name for parent in parents) for node, parents in pipeline.node_dependencies.items()
}
print(json.dumps(description))
"""


def subprocess_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any MLflow or Airflow setting a developer may have exported."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("MLFLOW_", "AIRFLOW_", "AIRFLOW__"))
    }
    environment.update(
        KEDRO_DISABLE_TELEMETRY="true", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", OMP_NUM_THREADS="1"
    )
    environment.update(variables)
    return environment


def run_python(root: Path, *arguments: str, **variables: str) -> str:
    result = subprocess.run(
        [sys.executable, *arguments], cwd=root, env=subprocess_environment(**variables), capture_output=True, text=True
    )
    assert result.returncode == 0, f"`python {' '.join(arguments)}` failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def project_copy(root: Path) -> Path:
    """The project's configuration (conf/local left out) in a folder of its own: its runs write only there."""
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    return root


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """The DAG generated as `make airflow-dag` does, loaded by DagBag, with the pipeline it comes from."""
    root = project_copy(tmp_path_factory.mktemp("airflow-project"))
    dags = root / "airflow_dags"
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    run_python(
        root, "-m", "kedro", "airflow", "create", f"--target-dir={dags}",
        f"--jinja-file={PROJECT_ROOT / 'scheduling' / 'airflow_dag.j2'}",
        "--params", f"project_path={root},python={sys.executable}",
    )
    output = run_python(
        root, "-c", DESCRIBE, str(dags), AIRFLOW_HOME=str(airflow_home), AIRFLOW__CORE__LOAD_EXAMPLES="False"
    )
    return json.loads(output.splitlines()[-1]), airflow_home


def test_dag_loads_without_import_errors_and_without_an_airflow_database(described):
    description, airflow_home = described
    assert description["import_errors"] == {}
    assert "dag" in description, "DagBag loaded no DAG named emm"
    assert not (airflow_home / "airflow.db").exists()


def test_every_kedro_node_is_a_task_with_the_kedro_dependencies(described):
    description, _ = described
    tasks, nodes = description["dag"]["tasks"], description["nodes"]
    assert len(nodes) > 100
    assert set(tasks) == {slugify(node) for node in nodes} | {SETUP_TASK, TEARDOWN_TASK}
    for node, parents in nodes.items():
        assert tasks[slugify(node)]["upstream"] == sorted({slugify(parent) for parent in parents} | {SETUP_TASK}), node


def test_pool_models_are_independent_tasks(described):
    description, _ = described
    tasks = description["dag"]["tasks"]
    pool_tasks = {slugify(node) for node in description["nodes"] if ".train_pool_model_" in node}
    parameters = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_census.yml").read_text())
    declared = {f"{ns}.train_pool_model_{name}" for ns in NAMESPACES for name in parameters[ns]["pool"]["models"]}
    assert pool_tasks == {slugify(node) for node in declared}

    def ancestors(task_id: str) -> set[str]:
        found, frontier = set(), [task_id]
        while frontier:
            for parent in tasks[frontier.pop()]["upstream"]:
                if parent not in found:
                    found.add(parent)
                    frontier.append(parent)
        return found

    for task_id in pool_tasks:
        assert not ancestors(task_id) & pool_tasks, f"{task_id} waits for another pool model"


def test_one_mlflow_run_per_dag_run_is_opened_by_a_setup_and_ended_by_a_teardown(described):
    description, _ = described
    dag = description["dag"]
    tasks = dag["tasks"]
    node_tasks = set(tasks) - {SETUP_TASK, TEARDOWN_TASK}
    assert tasks[SETUP_TASK]["is_setup"] and tasks[SETUP_TASK]["upstream"] == []
    teardown = tasks[TEARDOWN_TASK]
    assert teardown["is_teardown"] and teardown["trigger_rule"] == "all_done_setup_success"
    assert set(teardown["upstream"]) == node_tasks | {SETUP_TASK}
    # conf/base/airflow.yml
    assert (dag["schedule"], dag["max_active_runs"], dag["catchup"], dag["retries"]) == ("@weekly", 1, False, 1)


def test_kedro_runs_with_one_mlflow_run_id_log_into_one_run_that_stays_running_until_ended(tmp_path, census_slice):
    root = project_copy(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run_id = run_python(root, "-m", "emm.scheduling", "start", "--run-name", "emm scheduled").strip().splitlines()[-1]
    for node in ("census.fit_encoders", "census.encode_train"):
        run_python(root, "-m", "kedro", "run", f"--nodes={node}", EMM_CENSUS_DIR=str(census_slice), MLFLOW_RUN_ID=run_id)
        run = client.get_run(run_id)
        # Not ended, nor recorded KILLED by the next run for its process being gone.
        assert run.info.status == "RUNNING", node
    experiment = client.get_experiment_by_name("emm")
    assert [run.info.run_id for run in client.search_runs([experiment.experiment_id])] == [run_id]
    assert run.info.run_name == "emm scheduled"
    assert any(name.startswith("census.data_processing.") for name in run.data.params)  # from the first run
    assert "census.encode_train" in run.data.tags["kedro_command"]  # set by the second run
    assert "emm.pid" not in run.data.tags
    run_python(root, "-m", "emm.scheduling", "end", "--run-id", run_id, "--status", "FINISHED")
    assert client.get_run(run_id).info.status == "FINISHED"

"""The whole default pipeline through a KedroSession, on a slice of the real files, MLflow in a temporary store."""

import gzip
import json
import shutil

import mlflow
import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from conftest import PROJECT_ROOT, head_lines

TINY_RUN = {
    "census": {
        "training": {"max_epochs": 2, "batch_size": 512, "progress_bar": False},
        "pool": {
            "models": {
                "income_small": {"hidden_dims": [32, 16, 8]},
                "income_large": {"hidden_dims": [48, 32, 16, 8]},
                "never_married_small": {"hidden_dims": [32, 16, 8]},
                "never_married_large": {"hidden_dims": [48, 32, 16, 8]},
            }
        },
    }
}


@pytest.fixture(scope="module")
def project(tmp_path_factory, census_slice):
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(TINY_RUN))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
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
    assert set(aucs) == {"emm", "income_small", "income_large", "never_married_small", "never_married_large"}
    assert set(aucs["emm"]) == {"income", "never_married"}
    assert set(aucs["income_small"]) == {"income"}
    for scores in aucs.values():
        for auc in scores.values():
            assert 0 < auc < 1
    assert catalog.load("census.test_aucs") == aucs
    table = catalog.load("census.results_table")
    assert list(table["model"])[-2:] == ["pool average", "emm"]


def test_figures_are_written(first_run):
    root, _ = first_run
    for figure in ("roc_curves.png", "gate_weights.png"):
        content = (root / "data" / "08_reporting" / "census" / figure).read_bytes()
        assert content.startswith(b"\x89PNG") and len(content) > 10_000


def test_mlflow_run_has_metrics_and_artifacts(first_run):
    root, _ = first_run
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["emm"], output_format="list")
    assert len(runs) >= 1
    latest = runs[0]
    metrics = latest.data.metrics
    assert 0 < metrics["census.test_auc.emm.income"] < 1
    assert "census.pool.income_small.best_validation_auc.income" in metrics
    assert "census.emm.train_loss" in metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id, "census")}
    assert {"census/test_aucs.json", "census/roc_curves.png", "census/pool"} <= artifacts
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

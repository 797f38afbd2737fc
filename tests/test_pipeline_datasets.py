"""Smoke runs of the whole chain for Ali-CCP and AliExpress: on the genuine samples (preprocessed Ali-CCP CSV,
AliExpress CSV) and on small synthetic sets (raw Tianchi Ali-CCP, AliExpress), each namespace its own
`kedro run --pipelines=<namespace>` with tiny models, tables streamed from Parquet."""

import json
import shutil

import mlflow
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from conftest import PROJECT_ROOT, SHARED_DATA
from helpers import TINY_BASELINES
from emm.synthetic import generate_aliexpress, generate_ali_ccp_raw

TASKS = {
    "ali_ccp": ["click", "purchase"],
    "ali_ccp_synthetic": ["click", "purchase"],
    "aliexpress": ["click", "conversion"],
    "aliexpress_synthetic": ["click", "conversion"],
}


def tiny_parameters(namespace: str, samples: bool) -> dict:
    task = TASKS[namespace]
    return {
        "data_processing": {
            "chunk_rows": 500,
            "min_count": 1 if samples else 3,
            # the samples have 100 rows: a third for validation leaves it a few clicks
            "validation_fraction": 0.3 if samples else 0.1,
            **({"source": {"countries": None}} if namespace == "aliexpress" else {}),
        },
        # max_in_memory_rows below the tables' sizes: training streams them from Parquet
        "training": {
            "max_epochs": 2, "batch_size": 64 if samples else 256, "progress_bar": False,
            "max_in_memory_rows": 20 if samples else 1000, "shuffle_buffer_rows": 500,
        },  # fmt: skip
        "pool": {
            "models": {
                f"{t}_{size}": {"hidden_dims": dims}
                for t in task
                for size, dims in (("small", [32, 16, 8]), ("large", [48, 32, 16, 8]))
            }
        },
        "baselines": {"models": TINY_BASELINES},
        "evaluate": {
            "throughput_rows": 512, "throughput_batch_size": 256, "throughput_repeats": 1,
            "latency_calls": 10, "latency_warm_up": 2,
        },  # fmt: skip
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not (SHARED_DATA / "ali-ccp-samples").is_dir():
        pytest.skip("../shared/data samples not available")
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    synthetic = root / "synthetic"
    # label rates raised from the real ones (0.02% purchases) so that 6000 rows hold some of each
    rates = {"click": 0.1, "purchase_given_click": 0.2}
    generate_ali_ccp_raw(synthetic / "ali-ccp", train_rows=6000, test_rows=2000, seed=1, rates=rates)
    generate_aliexpress(synthetic / "aliexpress", ["NL"], train_rows=6000, test_rows=2000, seed=1, rates=rates)
    ali_ccp, aliexpress = SHARED_DATA / "ali-ccp-samples", SHARED_DATA / "aliexpress-samples"
    catalog = {
        "ali_ccp.raw_train": {"type": "emm.datasets.AliCCPCSVDataset", "filepath": str(ali_ccp / "torch-rechub_ali_ccp_train_sample.csv")},
        "ali_ccp.raw_test": {"type": "emm.datasets.AliCCPCSVDataset", "filepath": str(ali_ccp / "torch-rechub_ali_ccp_test_sample.csv")},
        "aliexpress.raw_train": {"type": "emm.datasets.AliExpressDataset", "filepath": str(aliexpress / "fuxictr_tiny_mtl_train.csv")},
        "aliexpress.raw_test": {"type": "emm.datasets.AliExpressDataset", "filepath": str(aliexpress / "fuxictr_tiny_mtl_test.csv")},
        "ali_ccp_synthetic.raw_train": {
            "type": "emm.datasets.AliCCPRawDataset", "chunk_rows": 1500,
            "skeleton": str(synthetic / "ali-ccp" / "sample_skeleton_train.csv"),
            "common_features": str(synthetic / "ali-ccp" / "common_features_train.csv"),
        },
        "ali_ccp_synthetic.raw_test": {
            "type": "emm.datasets.AliCCPRawDataset",
            "skeleton": str(synthetic / "ali-ccp" / "sample_skeleton_test.csv"),
            "common_features": str(synthetic / "ali-ccp" / "common_features_test.csv"),
        },
        "aliexpress_synthetic.raw_train": {
            "type": "emm.datasets.AliExpressDataset", "chunk_rows": 1500,
            "filepath": str(synthetic / "aliexpress" / "AliExpress_{country}" / "train.csv"),
        },
        "aliexpress_synthetic.raw_test": {
            "type": "emm.datasets.AliExpressDataset",
            "filepath": str(synthetic / "aliexpress" / "AliExpress_{country}" / "test.csv"),
        },
    }  # fmt: skip
    (root / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    # An absolute store: mlflow caches a store per URI, so a relative one shared with the Census end-to-end
    # project, run in the same process, would keep pointing at whichever project used it first.
    (root / "conf" / "local" / "mlflow.yml").write_text(
        yaml.safe_dump({"server": {"mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}})
    )
    parameters = {ns: tiny_parameters(ns, samples=not ns.endswith("synthetic")) for ns in TASKS}
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(parameters))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(root)
    bootstrap_project(root)
    yield root
    monkeypatch.undo()


@pytest.fixture(scope="module")
def runs(project):
    catalogs = {}
    for namespace in TASKS:
        with KedroSession.create(project_path=project) as session:
            session.run(pipeline_names=[namespace])
            catalogs[namespace] = session.load_context().catalog
    return project, catalogs


@pytest.mark.parametrize("namespace", list(TASKS))
def test_the_whole_chain_runs_for_every_dataset(runs, namespace):
    root, catalogs = runs
    catalog = catalogs[namespace]
    schema = catalog.load(f"{namespace}.feature_schema")
    assert [task["name"] for task in schema["tasks"]] == TASKS[namespace]
    features = {column["name"] for column in schema["categorical"]} | set(schema["dense"])
    assert not features & set(TASKS[namespace]), "a label is a feature"
    aucs = json.loads((root / "data" / "08_reporting" / namespace / "test_aucs.json").read_text())
    assert {"emm", "shared_bottom", "mmoe", "ple", "aitm", "adatt", f"{TASKS[namespace][0]}_small"} <= set(aucs)
    assert set(aucs["emm"]) == set(TASKS[namespace])
    assert (root / "data" / "08_reporting" / namespace / "table_1.md").stat().st_size > 100
    test = catalog.load(f"{namespace}.test")
    assert len(test) == len(catalog.load(f"{namespace}.test_predictions"))


def test_synthetic_sets_have_learnable_signal(runs):
    _, catalogs = runs
    for namespace in ("ali_ccp_synthetic", "aliexpress_synthetic"):
        aucs = catalogs[namespace].load(f"{namespace}.test_aucs")
        assert aucs["click_large"]["click"] > 0.6, namespace


def test_validation_rows_come_from_the_training_file(runs):
    root, catalogs = runs
    catalog = catalogs["aliexpress"]
    raw_train_rows = 100  # fuxictr_tiny_mtl_train.csv
    assert len(catalog.load("aliexpress.train")) + len(catalog.load("aliexpress.validation")) == raw_train_rows
    assert len(catalog.load("aliexpress.test")) == 100  # the whole test file, never split


def test_each_dataset_logs_under_its_own_prefix(runs):
    root, _ = runs
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs_found = mlflow.search_runs(experiment_names=["emm"], output_format="list")
    assert len(runs_found) == len(TASKS)
    client = mlflow.MlflowClient()
    for run in runs_found:
        namespaces = {key.split(".")[0] for key in run.data.metrics}
        assert len(namespaces) == 1, namespaces
        namespace = namespaces.pop()
        assert f"{namespace}.test_auc.emm.click" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {namespace}
        report = {a.path for a in client.list_artifacts(run.info.run_id, f"{namespace}/report")}
        assert f"{namespace}/report/table_1.md" in report

# Every target creates/uses the virtual environment in $(VENV) and installs what it needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

# No network but the package registries: keep every tool's telemetry off.
export KEDRO_DISABLE_TELEMETRY := true
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

# Where the raw Census-Income files are read from. On this machine and in CI the real files sit in
# ../shared/data/census-income; anywhere else the pipeline downloads them into data/01_raw/census-income.
ifeq ($(origin EMM_CENSUS_DIR), undefined)
ifneq ($(wildcard ../shared/data/census-income/census-income.data*),)
export EMM_CENSUS_DIR := ../shared/data/census-income
endif
endif

.PHONY: install airflow-install airflow-dag run report test benchmark benchmark-seeds benchmark-options scale-benchmark synthetic viz clean-outputs mlflow-ui

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU wheel first: an unpinned torch pulls gigabytes of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

# The whole comparison: every dataset's chain (census, census_3tasks, census_4tasks), then Figure 3.
run: install
	$(BIN)/kedro run

# Tables and figures again from the catalogued evaluation outputs, without training anything.
report: install
	$(BIN)/kedro run --pipelines=report

# The whole comparison, one `kedro run` per pipeline, timed, peak memory measured: data/08_reporting/benchmark.md
benchmark: install
	$(BIN)/python scripts/benchmark.py

# Table I with spread: the Census 2-task comparison retrained for model seeds 42, 43, 44 on the same split
# (1 thread a run; times in docs/results.md, "Table I over three seeds"): data/08_reporting/census/seeds/table_1_seeds.md
benchmark-seeds: install
	$(BIN)/python scripts/benchmark_seeds.py --namespace census --seeds 42,43,44

# The options measured on the way to EMM+ (scripts/fusion_options.py) and for the pool models of each task
# (scripts/pool_options.py), for model seeds 42, 43, 44:
# data/08_reporting/census/options/{fusion_options,pool_options_never_married,pool_options_income}.md
benchmark-options: install
	$(BIN)/python scripts/benchmark_options.py --seeds 42,43,44

# SYNTHETIC Ali-CCP (raw Tianchi layout) and AliExpress (NL) files for the *_synthetic namespaces: small
# sets to try the chains on; scale-benchmark writes its own, larger ones.
synthetic: install
	$(BIN)/python -m emm.synthetic ali-ccp --rows 200000 --out data/01_raw/synthetic/ali-ccp
	$(BIN)/python -m emm.synthetic aliexpress --rows 100000 --countries NL --out data/01_raw/synthetic/aliexpress

# Preprocessing and training rows/s and peak memory on synthetic Ali-CCP (10M rows, raw Tianchi layout) and
# AliExpress (5M rows): data/08_reporting/scale_{ali-ccp,aliexpress}.md (docs/results.md, "Scale").
scale-benchmark: install
	$(BIN)/python scripts/scale_benchmark.py ali-ccp --rows 10000000
	$(BIN)/python scripts/scale_benchmark.py aliexpress --rows 5000000

test: install
	$(BIN)/python -m pytest

# Lineage: a static build of kedro-viz in build/ (open build/index.html through any static file server).
viz: install
	$(BIN)/python -m pip install --quiet -e ".[viz]"
	$(BIN)/kedro viz build --include-hooks
	@echo "Static Kedro-Viz site in build/: python -m http.server --directory build 4141, then http://127.0.0.1:4141"

# Scheduling (README, "Scheduling"): Airflow 3 and kedro-airflow into the same venv. The constraints are the
# installed versions of the pinned stack, so that installing Airflow cannot move them (it may move what they
# leave free: Airflow 3.3 needs fastapi < 0.137, which mlflow allows).
AIRFLOW_PINNED := torch kedro kedro-datasets kedro-mlflow mlflow mlflow-skinny mlflow-tracing pandas numpy pyarrow \
	scikit-learn matplotlib sqlalchemy alembic
AIRFLOW_DAGS ?= airflow_dags

$(BIN)/.airflow-installed: $(BIN)/.installed
	$(BIN)/python -m pip freeze --exclude-editable | $(BIN)/python -c "import re, sys; \
	pinned = {re.sub('[-_.]+', '-', name).lower() for name in sys.argv[1:]}; \
	sys.stdout.writelines(line for line in sys.stdin \
	if re.sub('[-_.]+', '-', line.split('==')[0]).lower() in pinned)" $(AIRFLOW_PINNED) > $(VENV)/airflow-constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/airflow-constraints.txt -e ".[airflow]"
	touch $@

airflow-install: $(BIN)/.airflow-installed

# The Airflow DAG of the default pipeline into $(AIRFLOW_DAGS)/emm_dag.py: one task per Kedro node (no
# --group-by: README, "Scheduling"), each a `kedro run` from this checkout with this venv's interpreter.
airflow-dag: airflow-install
	$(BIN)/kedro airflow create --target-dir=$(AIRFLOW_DAGS) --jinja-file=scheduling/airflow_dag.j2 \
		--params "project_path=$(CURDIR),python=$(abspath $(BIN))/python"

clean-outputs:
	find data -type f ! -name .gitkeep -delete

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

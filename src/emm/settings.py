"""Kedro project settings."""

import os

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from emm.hooks import RunChecksHook, TrackingHook
from emm.pipelines.serving.registry import ServingRegistryHook

# The project runs where only package registries are reachable: no telemetry, ever.
for _variable in ("KEDRO_DISABLE_TELEMETRY", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
    os.environ.setdefault(_variable, "true")

# TrackingHook replaces kedro-mlflow's own hook (it fixes its error handler); the plugin's auto-registered
# hook is disabled, or every `kedro run` would open two MLflow runs, one of them empty.
# RunChecksHook checks parameters, the pool and half-written files before the first node (and before the
# MLflow run opens: its before_pipeline_run runs first).
# ServingRegistryHook registers the model a <dataset>_serving run logged (docs/serving.md); it runs after
# TrackingHook, which logs it.
HOOKS = (TrackingHook(), RunChecksHook(), ServingRegistryHook())
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `oc.env` lets the catalog read the raw-data directory from EMM_CENSUS_DIR (see README).
    "custom_resolvers": {"oc.env": oc.env},
    # Parameters of an environment (conf/local, conf/<env>) override base key by key, not whole sections.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
}

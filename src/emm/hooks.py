"""Project hooks."""

from __future__ import annotations

import mlflow
from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook
from mlflow.entities import RunStatus


class TrackingHook(MlflowHook):
    """kedro-mlflow's hook, mended twice.

    A run it opened stays open after the pipeline in kedro-mlflow 2.0.3 (``mlflow.active_run()`` is still
    set), so a second ``KedroSession`` in the same process (a notebook, a script running several
    datasets) logged into the first one's run. Here every run the hook opened is ended with the pipeline.

    In kedro-mlflow 2.0.3, when a pipeline fails while no MLflow run is active in the failing thread, the
    handler raises ``UnboundLocalError`` and that error, not the pipeline's own, ends the command. Here
    the run is marked failed and the pipeline's error stays the one reported.
    """

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        super().after_pipeline_run(run_params, pipeline, catalog)
        if self._is_mlflow_enabled and not self._already_active_mlflow:
            while mlflow.active_run() is not None:
                mlflow.end_run()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        if self._is_mlflow_enabled and not self._already_active_mlflow and mlflow.active_run() is None:
            self.mlflow_config.server._mlflow_client.set_terminated(
                self.run_id, RunStatus.to_string(RunStatus.FAILED)
            )
            return
        super().on_pipeline_error(error, run_params, pipeline, catalog)

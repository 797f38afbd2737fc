"""Project hooks: kedro-mlflow's hook mended (:class:`TrackingHook`) and the checks every run starts with
(:class:`RunChecksHook`)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import mlflow
from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook
from kedro_mlflow.pipeline.pipeline_ml import PipelineML
from mlflow.entities import RunStatus
from mlflow.tracking import fluent as mlflow_fluent

from emm.datasets.atomic import remove_stale_temporaries
from emm.parameters import validate_parameters
from emm.pipelines.serving.registry import check_serving_runs_alone

logger = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
# Tags every run gets, so that a later run can tell a run whose process was killed outright (SIGKILL, out
# of memory, a lost machine) from one still running, and record it as KILLED.
PID_TAG, HOST_TAG = "emm.pid", "emm.host"
# MLflow's own variable. A scheduler (emm.scheduling, the Airflow DAG) sets it to the run it opened, so that
# every `kedro run` of one scheduled run logs into that one MLflow run.
SHARED_RUN_VARIABLE = "MLFLOW_RUN_ID"


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names it."""


def check_tracking_store(uri: str, project_path: Path) -> None:
    """Fail at once, naming the store, where an SQLite store cannot work: MLflow itself retries for about
    100 s and then reports an SQLAlchemy error that does not name the file."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_absolute():
        path = project_path / path
    where = f"MLflow tracking store {uri} ({path})"
    remedy = "; or point server.mlflow_tracking_uri in conf/<env>/mlflow.yml elsewhere"
    if path.is_dir():
        raise TrackingStoreError(f"{where} is a folder, not an SQLite file: move it away{remedy}")
    if not path.parent.is_dir():
        raise TrackingStoreError(f"{where}: its folder {path.parent} does not exist{remedy}")
    if path.exists():
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise TrackingStoreError(f"{where} is not an SQLite database (it starts with {header!r}){remedy}")
        if not os.access(path, os.W_OK):
            raise TrackingStoreError(f"{where} is not writable{remedy}")
    elif not os.access(path.parent, os.W_OK):
        raise TrackingStoreError(f"{where} cannot be created: {path.parent} is not writable{remedy}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrackingHook(MlflowHook):
    """kedro-mlflow's hook, mended.

    - A run it opened stays open after the pipeline in kedro-mlflow 2.0.3 (``mlflow.active_run()`` is still
      set), so a second ``KedroSession`` in the same process logged into the first one's run. Here every run
      the hook opened is ended with the pipeline.
    - In kedro-mlflow 2.0.3, when a pipeline fails while no MLflow run is active in the failing thread, the
      handler raises ``UnboundLocalError`` and that error, not the pipeline's own, ends the command. Here the
      run is marked FAILED and the pipeline's error stays the one reported.
    - An interrupted run (Ctrl-C, SIGTERM) was recorded FINISHED by MLflow's exit handler; here it is
      recorded KILLED. A run whose process died without a chance to say so (SIGKILL) stays RUNNING in the
      store; the next run on the same machine finds it by its process id and records it KILLED.
    - The tracking store is checked before kedro-mlflow first opens it, and its errors name it.
    - A PipelineML's ``log_model_kwargs`` may say ``input_example="auto"``, as kedro-mlflow lets them say
      ``signature="auto"``: the model is logged with the rows of its input dataset as input example
      (kedro-mlflow 2.0.3 would pass the string "auto" on to MLflow).
    - With MLFLOW_RUN_ID set, the run joins that run (opened by a scheduler, see emm.scheduling) and leaves
      it RUNNING, whatever the outcome: the scheduler ends it once all its tasks are done.
    """

    _interrupted_by: int | None = None
    _previous_handlers: dict[int, object] | None = None
    _joined_shared_run: bool = False

    @hook_impl
    def after_context_created(self, context) -> None:
        uri = context.config_loader["mlflow"].get("server", {}).get("mlflow_tracking_uri") or ""
        check_tracking_store(uri, Path(context.project_path))
        try:
            super().after_context_created(context)
        except Exception as error:
            raise TrackingStoreError(f"MLflow tracking store {uri}: {type(error).__name__}: {error}") from error

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        shared_run_id = self._shared_run()
        super().before_pipeline_run(run_params, pipeline, catalog)
        if not self._is_mlflow_enabled or self._already_active_mlflow:
            return
        self._joined_shared_run = shared_run_id is not None
        self._record_dead_runs_killed()
        # A shared run outlives each process that logs into it: with a process id, the next task would find
        # that process gone and record the run KILLED.
        if not self._joined_shared_run:
            mlflow.set_tags({PID_TAG: os.getpid(), HOST_TAG: socket.gethostname()})
        self._catch_interruptions()

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._restore_handlers()
        if self._joined_shared_run:
            self._leave_shared_run()
            return
        log_model_kwargs = getattr(pipeline, "log_model_kwargs", None)
        if isinstance(pipeline, PipelineML) and log_model_kwargs.get("input_example") == "auto":
            # Put back after logging: the pipeline object is shared by every run of the process.
            pipeline.log_model_kwargs = {**log_model_kwargs, "input_example": catalog.load(pipeline.input_name)}
        try:
            super().after_pipeline_run(run_params, pipeline, catalog)
        finally:
            if log_model_kwargs is not None:
                pipeline.log_model_kwargs = log_model_kwargs
        if self._is_mlflow_enabled and not self._already_active_mlflow:
            while mlflow.active_run() is not None:
                mlflow.end_run()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._restore_handlers()
        if self._joined_shared_run:
            self._leave_shared_run()
            return
        if self._is_mlflow_enabled and not self._already_active_mlflow and mlflow.active_run() is None:
            self.mlflow_config.server._mlflow_client.set_terminated(
                self.run_id, RunStatus.to_string(RunStatus.FAILED)
            )
            return
        super().on_pipeline_error(error, run_params, pipeline, catalog)

    def _catch_interruptions(self) -> None:
        try:
            self._previous_handlers = {
                number: signal.signal(number, self._interrupted) for number in (signal.SIGINT, signal.SIGTERM)
            }
        except ValueError:  # signal handlers can only be set from the main thread
            self._previous_handlers = None

    def _restore_handlers(self) -> None:
        for number, handler in (self._previous_handlers or {}).items():
            signal.signal(number, handler)
        self._previous_handlers = None

    def _interrupted(self, number: int, frame) -> None:
        """Record the run KILLED, then stop as the signal would have: KeyboardInterrupt for SIGINT, exit
        status 128 + 15 for SIGTERM (after ``finally`` blocks ran: no half-written output stays)."""
        self._restore_handlers()
        name = signal.Signals(number).name
        if self._joined_shared_run:
            logger.warning("%s received: shared MLflow run %s left to the scheduler to end", name, self.run_id)
            self._leave_shared_run()
        else:
            logger.warning("%s received: MLflow run %s recorded KILLED", name, self.run_id)
            mlflow.set_tag("emm.stopped_by", name)
            while mlflow.active_run() is not None:
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        if number == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + number)

    def _shared_run(self) -> str | None:
        """The run named by MLFLOW_RUN_ID, made the one kedro-mlflow resumes, under its own name (kedro-mlflow
        would rename it after the pipeline); None when the variable is not set."""
        run_id = os.environ.get(SHARED_RUN_VARIABLE)
        if not run_id:
            return None
        where = f"{SHARED_RUN_VARIABLE}={run_id} (tracking store {self.mlflow_config.server.mlflow_tracking_uri})"
        try:
            run = self.mlflow_config.server._mlflow_client.get_run(run_id)
        except mlflow.MlflowException as error:
            raise TrackingStoreError(f"{where}: no such MLflow run: {error.message}") from error
        # Resuming an ended run would set it RUNNING again, with no scheduler task left to end it.
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            raise TrackingStoreError(
                f"{where}: the run is {run.info.status}, already ended by its scheduler; "
                f"unset {SHARED_RUN_VARIABLE} to log into a run of its own"
            )
        self.mlflow_config.tracking.run.id = run_id
        self.mlflow_config.tracking.run.name = run.info.run_name
        return run_id

    def _leave_shared_run(self) -> None:
        """Leave the shared run RUNNING for the scheduler to end. MLflow has no public call that leaves a run
        without ending it (``end_run``, also called at exit, records it FINISHED), so the run is taken off
        MLflow's stack of active runs of this thread, every time it is there (kedro-mlflow starts it again,
        nested, before each node)."""
        active_runs = mlflow_fluent._active_run_stack.get()
        active_runs[:] = [run for run in active_runs if run.info.run_id != self.run_id]
        self._joined_shared_run = False

    def _record_dead_runs_killed(self) -> None:
        client = self.mlflow_config.server._mlflow_client
        experiment = mlflow.get_experiment_by_name(self.mlflow_config.tracking.experiment.name)
        if experiment is None:
            return
        host = socket.gethostname()
        running = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        )
        for run in running:
            pid = int(run.data.tags.get(PID_TAG, "0"))
            if run.info.run_id != self.run_id and pid and pid != os.getpid() and not _process_alive(pid):
                client.set_tag(run.info.run_id, "emm.stopped_by", "process gone (found by a later run)")
                client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
                logger.warning(
                    "MLflow run %s (process %d on %s) was still RUNNING but its process is gone: recorded KILLED",
                    run.info.run_id,
                    pid,
                    host,
                )


class RunChecksHook:
    """What every run checks before its first node, so that bad settings fail before anything is written.

    - Half-written files left by an interrupted run (emm.datasets.atomic) are removed.
    - Every dataset's parameters are validated against the schema (emm.parameters), errors named by key path.
    - A serving pipeline run together with other pipelines, which would log no model, is refused
      (emm.pipelines.serving.registry).
    - With ``--only-missing-outputs``: a pool that changed since it was decomposed (a model added, replaced
      or about to be retrained) is refused, naming the command that rebuilds what depends on it. Kedro
      would otherwise skip the decomposition and every model fused from it, since their files exist.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        remove_stale_temporaries(Path(run_params.get("project_path") or Path.cwd()) / "data")
        validate_parameters(catalog.load("parameters"))
        check_serving_runs_alone(pipeline)
        if run_params.get("only_missing_outputs"):
            for message in stale_decompositions(pipeline, catalog):
                raise PoolChangedError(message)


class PoolChangedError(RuntimeError):
    """The pool differs from the one the stored decomposition was made of."""


def stale_decompositions(pipeline, catalog) -> list[str]:
    """One message per namespace whose stored decomposition was made of another pool than the current one."""
    from emm.pipelines.decompose.nodes import model_fingerprint  # torch: imported by runs, not by every command

    messages = []
    for decompose_node in (node for node in pipeline.nodes if node.name.split(".")[-1] == "decompose_pool"):
        namespace = decompose_node.namespace
        prefix = f"{namespace}.pool_model_" if namespace else "pool_model_"
        components, report_name = decompose_node.outputs
        if not (catalog.exists(components) and catalog.exists(report_name)):
            continue  # the decomposition runs anyway
        recorded = catalog.load(report_name).get("pool_fingerprint")
        if recorded is None:
            logger.warning("%s was written before pool fingerprints: a changed pool cannot be noticed", report_name)
            continue
        current = {
            dataset.removeprefix(prefix): model_fingerprint(catalog.load(dataset)) if catalog.exists(dataset) else None
            for dataset in decompose_node.inputs
            if dataset.startswith(prefix)
        }
        added = sorted(set(current) - set(recorded))
        removed = sorted(set(recorded) - set(current))
        retrained = sorted(name for name, value in current.items() if value is None)
        replaced = sorted(name for name in set(current) & set(recorded) if current[name] not in (None, recorded[name]))
        if not (added or removed or retrained or replaced):
            continue
        changes = "; ".join(
            f"{what}: {', '.join(names)}"
            for what, names in (("added", added), ("removed", removed), ("to be trained", retrained), ("replaced", replaced))
            if names
        )
        producers = [
            node.name
            for node in pipeline.nodes
            if any(output.removeprefix(prefix) in retrained for output in node.outputs if output.startswith(prefix))
        ]
        start = ",".join([*producers, decompose_node.name])
        pipeline_option = f" --pipelines={namespace}" if namespace else ""
        messages.append(
            f"The pool of {namespace or 'the dataset'} changed since {components} was decomposed ({changes}). "
            "--only-missing-outputs would keep that decomposition and every model fused from it, since their "
            f"files exist. Run `kedro run{pipeline_option} --from-nodes={start}` to decompose the new pool and "
            "retrain what depends on it (trained pool models and baselines are kept)."
        )
    return messages

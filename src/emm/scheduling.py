"""One MLflow run per scheduled run of the pipeline (README, "Scheduling").

A scheduler runs the pipeline as many ``kedro run`` commands, one per task. So that they log into one MLflow
run, the scheduler's first task opens it::

    python -m emm.scheduling start --run-name "emm 2026-11-30"    # prints the run id, last line of stdout

every task runs ``kedro run`` with ``MLFLOW_RUN_ID=<that id>`` (emm.hooks.TrackingHook joins that run and
leaves it RUNNING), and the scheduler's last task ends it with the outcome of the whole run::

    python -m emm.scheduling end --run-id <id> --status FINISHED    # or FAILED

Both commands read the tracking store and experiment from the project's ``mlflow.yml``, as ``kedro run`` does,
and are run from the project root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kedro.framework.project import settings
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

from emm.hooks import TrackingHook

END_STATUSES = ("FINISHED", "FAILED", "KILLED")


def project_tracking(project_path: Path, env: str | None) -> KedroMlflowConfig:
    """The project's MLflow configuration, set up (tracking store opened, experiment created) by the same hook
    and configuration files as a ``kedro run`` in that environment."""
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        session.load_context()
    tracking_hook = next(hook for hook in settings.HOOKS if isinstance(hook, TrackingHook))
    return tracking_hook.mlflow_config


def start_run(project_path: Path, env: str | None, run_name: str) -> str:
    """Open the shared run in the project's experiment; return its id. It carries no process id: it belongs to
    the scheduler, not to a process (TrackingHook records RUNNING runs of dead processes KILLED)."""
    tracking = project_tracking(project_path, env)
    run = tracking.server._mlflow_client.create_run(
        tracking.tracking.experiment._experiment.experiment_id, run_name=run_name, tags={"emm.scheduled": "true"}
    )
    return run.info.run_id


def end_run(project_path: Path, env: str | None, run_id: str, status: str) -> None:
    """Record the shared run ended with ``status`` (FINISHED, FAILED or KILLED)."""
    project_tracking(project_path, env).server._mlflow_client.set_terminated(run_id, status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emm.scheduling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=None, help="Kedro environment (default: the project's, conf/local)")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="open the shared MLflow run and print its id")
    start.add_argument("--run-name", required=True)
    end = commands.add_parser("end", help="end the shared MLflow run")
    end.add_argument("--run-id", required=True)
    end.add_argument("--status", required=True, choices=END_STATUSES)
    arguments = parser.parse_args(argv)
    project_path = Path.cwd()
    if arguments.command == "start":
        print(start_run(project_path, arguments.env, arguments.run_name))
    else:
        end_run(project_path, arguments.env, arguments.run_id, arguments.status)


if __name__ == "__main__":
    main()

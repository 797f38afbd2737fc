"""Training nodes whose settings ask for DDP (``training.distributed``): torchrun in a subprocess.

The node stays a function of its inputs and outputs: the model, the tables and the settings go to the
processes through a temporary folder, the trained model and its history come back through it, and the
folder is removed. Rank 0's model and history are the node's outputs, which the catalog saves and
kedro-mlflow logs, as for a model trained in the node's own process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from torch import nn

import emm
from emm.datasets import ParquetTableDataset, TorchModelDataset
from emm.models.tabular import Table
from emm.models.training import TrainingConfig
from emm.tables import ParquetTable
from emm.train_ddp import Job

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40


def train_with_torchrun(
    model: nn.Module,
    train: Table,
    validation: Table,
    feature_schema: dict,
    tasks: list[str],
    config: TrainingConfig,
    name: str,
) -> tuple[nn.Module, dict]:
    """Train ``model`` with DDP in ``config.distributed["nproc_per_node"]`` processes on this machine, each
    on its shard of ``train``. Returns rank 0's trained model, on the CPU, and its training history plus a
    ``distributed`` section: world size, backend, and each rank's rows and parameter checksum (checked
    equal). A failed run raises naming the model and the rank that failed first, with its stderr's end."""
    processes = config.distributed["nproc_per_node"]
    with tempfile.TemporaryDirectory(prefix=f"emm-ddp-{name}-") as scratch:
        folder = Path(scratch)
        job = Job(
            name=name,
            model=str(folder / "initial_model.pt"),
            train=str(_table_folder(train, folder / "train")),
            validation=str(_table_folder(validation, folder / "validation")),
            feature_schema=str(folder / "feature_schema.json"),
            tasks=list(tasks),
            training={key: value for key, value in dataclasses.asdict(config).items() if key != "distributed"},
            output=str(folder / "output"),
        )
        TorchModelDataset(job.model).save(model)
        Path(job.feature_schema).write_text(json.dumps(feature_schema))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a rendezvous on this machine, on a free port
            f"--nproc-per-node={processes}",
            f"--log-dir={folder / 'logs'}",
            "--redirects=3",  # each rank's stdout and stderr to a file, for the error message
            "--tee=3",  # and to this process's console as well, for the progress bar and logs
            "-m",
            "emm.train_ddp",
            str(job.write(folder / "job.json")),
        ]
        logger.info("%s: training with DDP in %d processes: %s", name, processes, shlex.join(command))
        exit_code = subprocess.run(command, env=_rank_environment(), check=False).returncode
        if exit_code != 0:
            raise RuntimeError(_failure_message(job, processes, exit_code, folder / "logs"))
        return _rank_zero_results(job, processes)


def _table_folder(table: Table, scratch: Path) -> Path:
    """The Parquet folder the ranks read ``table`` from: its own, or for a frame a copy written to ``scratch``."""
    if isinstance(table, ParquetTable):
        return table.folder.resolve()
    ParquetTableDataset(str(scratch)).save(table)
    return scratch


def _rank_environment() -> dict[str, str]:
    """This environment with the source of the ``emm`` this process runs first on the path, so that the
    ranks run the node's code whether or not the package is installed."""
    source = str(Path(emm.__file__).resolve().parents[1])
    paths = [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _rank_zero_results(job: Job, processes: int) -> tuple[nn.Module, dict]:
    ranks = [json.loads(job.rank_report(rank).read_text()) for rank in range(processes)]
    if len({rank["parameter_sha256"] for rank in ranks}) != 1:
        raise RuntimeError(
            f"{job.name}: the {processes} DDP ranks ended with different parameters "
            f"({[rank['parameter_sha256'][:12] for rank in ranks]}): their gradients were not averaged in step"
        )
    model = TorchModelDataset(str(job.trained_model)).load()
    history = json.loads(job.history.read_text())
    return model, {**history, "distributed": {"world_size": processes, "backend": ranks[0]["backend"], "ranks": ranks}}


def _failure_message(job: Job, processes: int, exit_code: int, logs: Path) -> str:
    """Which rank failed first (the others' failures usually follow from it: a peer that vanished
    mid-collective), what it raised and the end of its stderr; without a rank's report, every rank's."""
    failed = f"{job.name}: DDP training in {processes} processes failed (torchrun exit code {exit_code})"
    failures = sorted(
        (json.loads(job.failure(rank).read_text()) for rank in range(processes) if job.failure(rank).exists()),
        key=lambda failure: failure["time"],
    )
    if failures:
        first, later = failures[0], [failure["rank"] for failure in failures[1:]]
        then = f" (then ranks {later})" if later else ""
        stderr = f"The end of its stderr:\n{_stderr_tail(logs, first['local_rank'])}"
        return f"{failed}; rank {first['rank']} failed first{then} with {first['error']}\n{stderr}"
    tails = {rank: _stderr_tail(logs, rank) for rank in range(processes)}
    tails = {rank: tail for rank, tail in tails.items() if tail}
    if not tails:
        return f"{failed} before any rank wrote to its stderr; torchrun's own output above says why"
    return f"{failed}; no rank reported an error of its own. The end of each rank's stderr:\n" + "\n".join(
        f"rank {rank}:\n{tail}" for rank, tail in tails.items()
    )


def _stderr_tail(logs: Path, local_rank: int) -> str:
    # torchrun writes <log-dir>/<run id>/attempt_<n>/<local rank>/stderr.log
    paths = sorted(logs.glob(f"*/attempt_*/{local_rank}/stderr.log"))
    if not paths:
        return ""
    return "\n".join(paths[-1].read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:])

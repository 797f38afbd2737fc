"""One rank of a data-parallel (torch DDP) training run, started by torchrun:

    python -m torch.distributed.run --nproc-per-node N -m emm.train_ddp JOB.json

JOB.json (``Job``) names the model to train (a model file, as the catalog saves them), the training and
validation tables (folders of Parquet files), the feature schema, the tasks, the training settings and an
output folder. Each rank reads its shard of the training rows (``ParquetTable.shard``) and trains by the
project's one training loop (``emm.models.training.fit``); rank 0 scores validation, then writes the trained
model and the training history; every rank writes what it trained on and a checksum of its parameters. A
rank that fails writes what failed and when, so that the launcher can tell the first failure from the
failures it caused. docs/distributed.md: launching on one machine or several.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from emm.datasets.torch_model import TorchModelDataset
from emm.models.distributed import parameter_checksum, process_group
from emm.models.tabular import tabular_data
from emm.models.training import TrainingConfig, fit
from emm.tables import ParquetTable

logger = logging.getLogger(__name__)


@dataclass
class Job:
    name: str  # the model's name, in logs and errors
    model: str  # model file to start from (emm.datasets.TorchModelDataset)
    train: str  # Parquet folder, sharded over the ranks
    validation: str  # Parquet folder, scored by rank 0
    feature_schema: str  # JSON file
    tasks: list[str]
    training: dict  # emm.models.training.TrainingConfig settings
    output: str  # folder the ranks write to

    @classmethod
    def read(cls, path: Path) -> Job:
        settings = json.loads(Path(path).read_text())
        fields = set(cls.__dataclass_fields__)
        if not isinstance(settings, dict) or set(settings) != fields:
            keys = sorted(settings) if isinstance(settings, dict) else type(settings).__name__
            raise ValueError(f"{path}: a job needs exactly the keys {sorted(fields)}, found {keys}")
        return cls(**settings)

    def write(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))
        return Path(path)

    @property
    def trained_model(self) -> Path:
        return Path(self.output) / "model.pt"

    @property
    def history(self) -> Path:
        return Path(self.output) / "history.json"

    def rank_report(self, rank: int) -> Path:
        return Path(self.output) / f"rank-{rank}.json"

    def failure(self, rank: int) -> Path:
        return Path(self.output) / f"failure-rank-{rank}.json"


def train(job: Job) -> None:
    config = TrainingConfig.from_params(job.training)
    with process_group(config.device) as context:
        model = TorchModelDataset(job.model).load()
        schema = json.loads(Path(job.feature_schema).read_text())
        loading = {"max_in_memory_rows": config.max_in_memory_rows, "shuffle_buffer_rows": config.shuffle_buffer_rows}
        shard = ParquetTable(job.train).shard(context.rank, context.world_size)
        logger.info(
            "%s: rank %d trains on rows [%d, %d) of %s", job.name, context.rank, shard.start, shard.stop, job.train
        )
        train_rows = tabular_data(shard, schema, **loading)
        validation = tabular_data(ParquetTable(job.validation), schema, **loading) if context.is_main else None
        config = dataclasses.replace(config, progress_bar=config.progress_bar and context.is_main)
        history = fit(model, train_rows, validation, job.tasks, config, name=job.name, distributed=context)
        report = {
            "rank": context.rank,
            "world_size": context.world_size,
            "backend": context.backend,
            "device": str(context.device),
            "rows": [shard.start, shard.stop],
            "parameter_sha256": parameter_checksum(model),
        }
        _write_json(job.rank_report(context.rank), report)
        if context.is_main:
            TorchModelDataset(str(job.trained_model)).save(model.cpu())
            _write_json(job.history, history.as_dict())


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m torch.distributed.run --nproc-per-node N -m emm.train_ddp",
        description="One rank of a DDP training run (docs/distributed.md).",
    )
    parser.add_argument("job", type=Path, help="the job's JSON file")
    job = Job.read(parser.parse_args(argv).job)
    rank = int(os.environ.get("RANK", 0))
    # Rank 0 logs the run; the others only what goes wrong, since their epochs' numbers are rank 0's.
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s",
    )
    try:
        train(job)
    except Exception as error:
        failure = {
            "rank": rank,
            "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
            "time": time.time(),
            "error": f"{type(error).__name__}: {error}",
        }
        _write_json(job.failure(rank), failure)
        raise


if __name__ == "__main__":
    main()

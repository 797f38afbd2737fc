"""Data-parallel training: shards of a Parquet table, and the training loop's settings and ranks under torch DDP."""

import pandas as pd
import pytest
import torch

from emm.datasets import ParquetTableDataset
from emm.models.distributed import process_group, rank_device
from emm.models.tabular import TabularData
from emm.models.training import TrainingConfig, _steps_per_epoch
from emm.tables import ParquetTableShard
from test_training import SCHEMA, toy_table


def parquet_table(frame: pd.DataFrame, path, row_group_rows: int = 70):
    dataset = ParquetTableDataset(str(path), row_group_rows=row_group_rows)
    dataset.save([frame.iloc[:250], frame.iloc[250:]])  # two files, row groups that straddle the shards' edges
    return dataset.load()


def test_shards_are_disjoint_balanced_and_cover_every_row_whichever_way_they_are_read(tmp_path):
    frame = toy_table(301, 0)
    table = parquet_table(frame, tmp_path / "table")
    for world_size in (1, 2, 3, 7):
        shards = [table.shard(rank, world_size) for rank in range(world_size)]
        assert shards[0].start == 0 and shards[-1].stop == len(frame)
        assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        for shard in shards:
            expected = frame.iloc[shard.start : shard.stop].reset_index(drop=True)
            pd.testing.assert_frame_equal(shard.read(), expected)
            pd.testing.assert_frame_equal(pd.concat(shard.iter_chunks(), ignore_index=True), expected)
            pd.testing.assert_frame_equal(shard.read(["label_t"]), expected[["label_t"]])
            assert len(shard) == len(expected)
    # Only the row groups a shard overlaps are read: rank 1 of 2 (rows 150-301) starts in the third of the
    # first file's groups of 70 rows.
    assert table.shard(1, 2).row_groups == [(0, 2), (0, 3), (1, 0)]


def test_a_table_too_small_for_its_ranks_is_refused_by_name(tmp_path):
    table = parquet_table(toy_table(300, 0), tmp_path / "table")
    with pytest.raises(ValueError, match=r"table: 300 rows cannot give each of 301 ranks a row"):
        ParquetTableShard(table, 0, 301)
    with pytest.raises(ValueError, match="rank 2 is not one of the 2 ranks"):
        table.shard(2, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 16])
def test_steps_per_epoch_counts_the_steps_the_loop_takes(batch_size):
    """Ranks agree on the fewest steps of any rank by this count: it must be what an epoch really takes."""
    for rows in range(1, 40):
        data = TabularData.from_frame(toy_table(rows, 0), SCHEMA)
        trained = [labels for _, labels in data.batches(batch_size, torch.Generator()) if len(labels) >= 2]
        assert _steps_per_epoch(rows, batch_size) == len(trained), rows


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"nodes": 2},
        {"nproc_per_node": 0},
        {"nproc_per_node": "2"},
        {"nproc_per_node": True},
        {"nproc_per_node": 2, "nnodes": 2},
        2,
    ],
)
def test_unusable_distributed_settings_are_refused_when_read(settings):
    with pytest.raises(ValueError, match=r"training\.distributed .*nproc_per_node"):
        TrainingConfig.from_params({"distributed": settings})


def test_joining_a_process_group_outside_torchrun_says_how_to_start(monkeypatch):
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(RuntimeError, match=r"lacks \['RANK', .*torch\.distributed\.run"):
        with process_group("cpu"):
            pass


def test_each_rank_gets_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", 1) == torch.device("cuda:1")
    assert rank_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'cuda:0', one GPU, .*auto or cuda"):
        rank_device("cuda:0", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' but only 2 CUDA device"):
        rank_device("cuda", 2)

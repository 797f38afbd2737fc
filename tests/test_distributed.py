"""Data-parallel training: shards of a Parquet table."""

import pandas as pd
import pytest

from emm.datasets import ParquetTableDataset
from emm.tables import ParquetTableShard
from test_training import toy_table


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

"""Tables stored as a folder of Parquet files, read lazily, and tables produced chunk by chunk.

A node that produces a table larger than memory returns ``TableChunks`` (a recipe for the chunks, run when
the catalog saves it); ``emm.datasets.ParquetTableDataset`` writes one Parquet file per chunk, so memory
holds one chunk at a time. Loading returns a ``ParquetTable``: a handle that reads columns, the first rows
or row groups on demand (``emm.models.tabular`` streams training batches from it); ``ParquetTable.shard``
gives one data-parallel rank its rows of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

PART_PATTERN = "part-*.parquet"


class TableChunks:
    """The chunks of a table, produced when iterated (each iteration starts again from the beginning)."""

    def __init__(self, make_chunks: Callable[[], Iterator[pd.DataFrame]]):
        self._make_chunks = make_chunks

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter(self._make_chunks())


class ParquetTable:
    """A table in ``part-*.parquet`` files, read in their name order."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.paths = sorted(self.folder.glob(PART_PATTERN))
        if not self.paths:
            raise FileNotFoundError(f"{self.folder}: no {PART_PATTERN} files; has the table been written?")

    @cached_property
    def _metadata(self) -> list[pq.FileMetaData]:
        return [pq.read_metadata(path) for path in self.paths]

    @cached_property
    def columns(self) -> list[str]:
        return self._metadata[0].schema.to_arrow_schema().names

    def __len__(self) -> int:
        return sum(metadata.num_rows for metadata in self._metadata)

    @property
    def row_groups(self) -> list[tuple[int, int]]:
        """(file, row group) pairs in table order."""
        return [(f, g) for f, metadata in enumerate(self._metadata) for g in range(metadata.num_row_groups)]

    def read_row_group(self, row_group: tuple[int, int], columns: list[str] | None = None) -> pd.DataFrame:
        # A file opened per read: an open ParquetFile keeps the buffers of every row group it has read.
        file, group = row_group
        with pq.ParquetFile(self.paths[file]) as parquet_file:
            return parquet_file.read_row_group(group, columns=columns).to_pandas()

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The whole table (or some of its columns) in memory."""
        frames = [pq.read_table(path, columns=columns).to_pandas() for path in self.paths]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def iter_chunks(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The table one row group at a time, in table order."""
        for row_group in self.row_groups:
            yield self.read_row_group(row_group, columns)

    def head(self, rows: int) -> pd.DataFrame:
        taken, frames = 0, []
        for chunk in self.iter_chunks():
            frames.append(chunk.iloc[: rows - taken])
            taken += len(frames[-1])
            if taken >= rows:
                break
        return pd.concat(frames, ignore_index=True)

    def shard(self, rank: int, world_size: int) -> ParquetTableShard:
        """The rows of ``rank`` out of ``world_size`` data-parallel ranks (see ``ParquetTableShard``)."""
        return ParquetTableShard(self, rank, world_size)


class ParquetTableShard(ParquetTable):
    """One rank's share of a table in data-parallel training: the contiguous rows [start, stop), read like a
    whole table (by row group, or at once) without reading the other ranks' rows.

    Rank r of W gets rows [N*r//W, N*(r+1)//W): the shards are disjoint, cover every row and differ in size
    by one row at most. Rows rather than row groups are dealt out because row groups are not of one size
    (a table written from one frame has full groups and a short last one), so dealing groups would leave
    one rank with most of the rows. Only the row groups at a shard's two ends are read beyond it.
    """

    def __init__(self, table: ParquetTable, rank: int, world_size: int):
        super().__init__(table.folder)
        if not 0 <= rank < world_size:
            raise ValueError(f"{self.folder}: rank {rank} is not one of the {world_size} ranks")
        total = len(table)
        if total < world_size:
            raise ValueError(f"{self.folder}: {total} rows cannot give each of {world_size} ranks a row")
        self.rank, self.world_size = rank, world_size
        self.start, self.stop = total * rank // world_size, total * (rank + 1) // world_size

    @cached_property
    def _spans(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Each (file, row group) of the whole table: the table rows [first, last) it holds."""
        spans, first = {}, 0
        for file, group in super().row_groups:
            last = first + self._metadata[file].row_group(group).num_rows
            spans[file, group] = (first, last)
            first = last
        return spans

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def row_groups(self) -> list[tuple[int, int]]:
        return [group for group, (first, last) in self._spans.items() if first < self.stop and last > self.start]

    def read_row_group(self, row_group: tuple[int, int], columns: list[str] | None = None) -> pd.DataFrame:
        """The shard's rows of one row group."""
        first, last = self._spans[row_group]
        rows = super().read_row_group(row_group, columns)
        return rows.iloc[max(self.start - first, 0) : min(self.stop, last) - first].reset_index(drop=True)

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.concat(list(self.iter_chunks(columns)), ignore_index=True)


def rechunk(chunks: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The same rows in chunks of ``rows`` (the last one shorter): filtered chunks can be tiny."""
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    for chunk in chunks:
        pending.append(chunk)
        pending_rows += len(chunk)
        while pending_rows >= rows:
            merged = pd.concat(pending, ignore_index=True)
            yield merged.iloc[:rows].reset_index(drop=True)
            pending, pending_rows = [merged.iloc[rows:]], len(merged) - rows
    if pending_rows:
        yield pd.concat(pending, ignore_index=True)

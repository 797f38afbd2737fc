"""Tables stored as a folder of Parquet files, read lazily, and tables produced chunk by chunk.

A node that produces a table larger than memory returns ``TableChunks`` (a recipe for the chunks, run when
the catalog saves it); ``emm.datasets.ParquetTableDataset`` writes one Parquet file per chunk, so memory
holds one chunk at a time. Loading returns a ``ParquetTable``: a handle that reads columns, the first rows
or row groups on demand (``emm.models.tabular`` streams training batches from it).
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

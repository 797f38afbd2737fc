"""``ParquetTableDataset``: the catalog's entry type for encoded tables of any size (see ``emm.tables``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from kedro.io import AbstractDataset, DatasetError

from emm.datasets.atomic import temporary_prefix
from emm.tables import PART_PATTERN, ParquetTable


class ParquetTableDataset(AbstractDataset[pd.DataFrame | Iterable[pd.DataFrame], ParquetTable]):
    """A folder of Parquet files. Saves a DataFrame, a ``ParquetTable`` or any iterable of DataFrames
    (one file per chunk); loads a ``ParquetTable``.

    A save goes to a temporary folder beside ``filepath`` that replaces the old table only once every
    chunk is written: a save that fails half way leaves the previous table as it was.
    """

    def __init__(self, filepath: str, row_group_rows: int = 131072, metadata: dict | None = None):
        self._folder = Path(filepath)
        self._row_group_rows = row_group_rows
        self.metadata = metadata

    def _load(self) -> ParquetTable:
        try:
            return ParquetTable(self._folder)
        except FileNotFoundError as error:
            raise DatasetError(str(error)) from error

    def _save(self, data: pd.DataFrame | ParquetTable | Iterable[pd.DataFrame]) -> None:
        if isinstance(data, pd.DataFrame):
            chunks: Iterable[pd.DataFrame] = [data]
        elif isinstance(data, ParquetTable):
            chunks = data.iter_chunks()
        else:
            chunks = data
        self._folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self._folder.parent, prefix=temporary_prefix(self._folder), suffix=".part"))
        try:
            schema = None
            for index, chunk in enumerate(chunks):
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if schema is None:
                    schema = table.schema
                elif not table.schema.equals(schema):
                    raise DatasetError(
                        f"{self._folder}: chunk {index} has columns {table.schema.names} "
                        f"({table.schema.types}); the first chunk had {schema.names} ({schema.types})"
                    )
                pq.write_table(table, staging / f"part-{index:05d}.parquet", row_group_size=self._row_group_rows)
            if schema is None:
                raise DatasetError(f"{self._folder}: nothing to save, the table has no chunks")
            self._replace_folder(staging)
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def _replace_folder(self, staging: Path) -> None:
        if self._folder.exists():
            retired = staging.with_name(staging.name + ".old")
            self._folder.rename(retired)
            staging.rename(self._folder)
            shutil.rmtree(retired)
        else:
            staging.rename(self._folder)

    def _exists(self) -> bool:
        return any(self._folder.glob(PART_PATTERN))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._folder), "row_group_rows": self._row_group_rows}

"""Tabular inputs: encoded feature tables as tensors, and the embedding layer every model starts with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from emm.tables import ParquetTable


def task_index(task_names: list[str], task: str) -> int:
    if task not in task_names:
        raise KeyError(f"Task {task!r} is not one of the data's tasks {task_names}")
    return task_names.index(task)


class TabularBatch(NamedTuple):
    """One batch of encoded features; a model's ``forward`` takes it as its single argument."""

    categorical: torch.Tensor  # [B, n_categorical] int64 codes, 0 = unseen value
    dense: torch.Tensor  # [B, n_dense] float32, scaled

    def to(self, device: torch.device) -> TabularBatch:
        return TabularBatch(self.categorical.to(device), self.dense.to(device))


@dataclass
class TabularData:
    """A whole encoded table held as tensors, with one label column per task."""

    categorical: torch.Tensor  # [N, n_categorical]
    dense: torch.Tensor  # [N, n_dense]
    labels: torch.Tensor  # [N, n_tasks] float32 in {0, 1}
    task_names: list[str]

    @classmethod
    def from_frame(cls, table: pd.DataFrame, schema: dict, with_labels: bool = True) -> TabularData:
        """Select the schema's columns from an encoded table (see ``data_processing``). Rows to predict
        (``with_labels=False``) need no label columns and get labels ``[N, 0]``."""
        categorical_columns, label_columns = schema_columns(table.columns, schema, with_labels)
        return cls(
            categorical=torch.as_tensor(table[categorical_columns].to_numpy(np.int64, copy=True)),
            dense=torch.as_tensor(table[schema["dense"]].to_numpy(np.float32, copy=True)),
            labels=torch.as_tensor(table[label_columns].to_numpy(np.float32, copy=True)),
            task_names=[task["name"] for task in schema["tasks"]],
        )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def rows(self, index: torch.Tensor | slice) -> TabularData:
        return TabularData(self.categorical[index], self.dense[index], self.labels[index], self.task_names)

    def batch(self, index: torch.Tensor | slice) -> tuple[TabularBatch, torch.Tensor]:
        return TabularBatch(self.categorical[index], self.dense[index]), self.labels[index]

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[TabularBatch, torch.Tensor]]:
        """Mini-batches in a random order drawn from ``generator``, or in table order without one."""
        if generator is None:
            for start in range(0, len(self), batch_size):
                yield self.batch(slice(start, start + batch_size))
            return
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start : start + batch_size])

    def task_index(self, task: str) -> int:
        return task_index(self.task_names, task)


def schema_columns(columns, schema: dict, with_labels: bool = True) -> tuple[list[str], list[str]]:
    """The schema's categorical and label columns (none without labels), checked against a table's
    ``columns``."""
    categorical_columns = [column["name"] for column in schema["categorical"]]
    label_columns = [task["label_column"] for task in schema["tasks"]] if with_labels else []
    present = set(columns)
    missing = [c for c in categorical_columns + schema["dense"] + label_columns if c not in present]
    if missing:
        raise KeyError(f"Encoded table lacks the schema's columns {missing}")
    return categorical_columns, label_columns


class StreamingTabularData:
    """An encoded table read from Parquet a row group at a time, never whole: the ``TabularData`` interface
    for tables larger than memory.

    Shuffled batches come from row groups taken in a random order and mixed in a buffer of
    ``shuffle_buffer_rows`` rows, so memory holds the buffer (plus one row group), whatever the table's size.
    """

    def __init__(self, table: ParquetTable, schema: dict, shuffle_buffer_rows: int = 262144):
        self.table = table
        self.schema = schema
        self.shuffle_buffer_rows = shuffle_buffer_rows
        self._categorical_columns, self._label_columns = schema_columns(table.columns, schema)
        self._columns = self._categorical_columns + schema["dense"] + self._label_columns
        self.task_names = [task["name"] for task in schema["tasks"]]

    def __len__(self) -> int:
        return len(self.table)

    @cached_property
    def labels(self) -> torch.Tensor:
        """[N, n_tasks]: the label columns alone, which fit in memory when the features do not."""
        return torch.as_tensor(self.table.read(self._label_columns).to_numpy(np.float32, copy=True))

    def task_index(self, task: str) -> int:
        return task_index(self.task_names, task)

    def _row_group(self, row_group: tuple[int, int]) -> TabularData:
        return TabularData.from_frame(self.table.read_row_group(row_group, self._columns), self.schema)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[TabularBatch, torch.Tensor]]:
        """Mini-batches shuffled through the buffer with ``generator``, or in table order without one."""
        row_groups = self.table.row_groups
        if generator is not None:
            row_groups = [row_groups[i] for i in torch.randperm(len(row_groups), generator=generator)]
        threshold = self.shuffle_buffer_rows if generator is not None else batch_size
        buffer: TabularData | None = None
        for row_group in row_groups:
            buffer = _concatenate(buffer, self._row_group(row_group))
            if len(buffer) < threshold:
                continue
            usable = len(buffer) - len(buffer) % batch_size  # the rest waits for the next row group
            yield from buffer.rows(slice(0, usable)).batches(batch_size, generator)
            buffer = buffer.rows(slice(usable, None))
        if buffer is not None and len(buffer):
            yield from buffer.batches(batch_size, generator)


def _concatenate(first: TabularData | None, second: TabularData) -> TabularData:
    if first is None or not len(first):
        return second
    return TabularData(
        torch.cat([first.categorical, second.categorical]),
        torch.cat([first.dense, second.dense]),
        torch.cat([first.labels, second.labels]),
        first.task_names,
    )


Table = Union[pd.DataFrame, ParquetTable]


def tabular_data(
    table: Table, schema: dict, max_in_memory_rows: int | None = None, shuffle_buffer_rows: int = 262144
) -> TabularData | StreamingTabularData:
    """An encoded table as model input: in memory when it has at most ``max_in_memory_rows`` rows (no
    limit when None), else streamed from its Parquet files."""
    if isinstance(table, pd.DataFrame):
        return TabularData.from_frame(table, schema)
    if max_in_memory_rows is None or len(table) <= max_in_memory_rows:
        return TabularData.from_frame(table.read(), schema)
    return StreamingTabularData(table, schema, shuffle_buffer_rows)


def input_signature(schema: dict) -> dict:
    """The part of a feature schema a model depends on: its columns, their order and vocabularies."""
    return {
        "categorical": [[c["name"], int(c["vocabulary_size"])] for c in schema["categorical"]],
        "dense": list(schema["dense"]),
    }


def example_batch(signature: dict, batch_size: int = 4, seed: int = 0) -> TabularBatch:
    """A random batch that fits ``signature``: for shape tracing and equivalence checks."""
    generator = torch.Generator().manual_seed(seed)
    columns = [
        torch.randint(0, size, (batch_size,), generator=generator) for _, size in signature["categorical"]
    ]
    categorical = torch.stack(columns, dim=1) if columns else torch.zeros(batch_size, 0, dtype=torch.int64)
    dense = torch.randn(batch_size, len(signature["dense"]), generator=generator)
    return TabularBatch(categorical, dense)


class FeatureEmbedding(nn.Module):
    """Embeds every categorical column and appends the dense columns: [B, n_cat*dim + n_dense]."""

    def __init__(self, signature: dict, embedding_dim: int):
        super().__init__()
        self.signature = signature
        self.embedding_dim = embedding_dim
        self.tables = nn.ModuleList(nn.Embedding(size, embedding_dim) for _, size in signature["categorical"])
        self.output_dim = embedding_dim * len(self.tables) + len(signature["dense"])

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        embedded = [table(batch.categorical[:, i]) for i, table in enumerate(self.tables)]  # each [B, dim]
        return torch.cat([*embedded, batch.dense], dim=1)

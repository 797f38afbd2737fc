"""Tabular inputs: encoded feature tables as tensors, and the embedding layer every model starts with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn


class TabularBatch(NamedTuple):
    """One batch of encoded features; a model's ``forward`` takes it as its single argument."""

    categorical: torch.Tensor  # [B, n_categorical] int64 codes, 0 = unseen value
    dense: torch.Tensor  # [B, n_dense] float32, scaled


@dataclass
class TabularData:
    """A whole encoded table held as tensors, with one label column per task."""

    categorical: torch.Tensor  # [N, n_categorical]
    dense: torch.Tensor  # [N, n_dense]
    labels: torch.Tensor  # [N, n_tasks] float32 in {0, 1}
    task_names: list[str]

    @classmethod
    def from_frame(cls, table: pd.DataFrame, schema: dict) -> TabularData:
        """Select the schema's columns from an encoded table (see ``data_processing``)."""
        categorical_columns = [column["name"] for column in schema["categorical"]]
        label_columns = [task["label_column"] for task in schema["tasks"]]
        missing = [
            c for c in categorical_columns + schema["dense"] + label_columns if c not in table.columns
        ]
        if missing:
            raise KeyError(f"Encoded table lacks the schema's columns {missing}")
        return cls(
            categorical=torch.as_tensor(table[categorical_columns].to_numpy(np.int64, copy=True)),
            dense=torch.as_tensor(table[schema["dense"]].to_numpy(np.float32, copy=True)),
            labels=torch.as_tensor(table[label_columns].to_numpy(np.float32, copy=True)),
            task_names=[task["name"] for task in schema["tasks"]],
        )

    def __len__(self) -> int:
        return self.labels.shape[0]

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
        if task not in self.task_names:
            raise KeyError(f"Task {task!r} is not one of the data's tasks {self.task_names}")
        return self.task_names.index(task)


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

"""Tables larger than memory: Parquet folders written chunk by chunk, encoders fitted in one pass, batches streamed."""

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from emm.datasets import ParquetTableDataset
from emm.models.tabular import StreamingTabularData, TabularData, tabular_data
from emm.pipelines.data_processing.nodes import (
    POOL,
    SPLIT_COLUMN,
    VALIDATION,
    build_feature_schema,
    encode_training_rows,
    fit_streaming_encoders,
    row_splits,
    split_encoded_rows,
)
from emm.tables import TableChunks

PARAMS = {
    "tasks": [{"name": "click", "column": "click", "positive": [1]}],
    "dense_columns": ["price"],
    "drop_columns": ["query"],
    "min_count": 3,
    "validation_fraction": 0.2,
    "fusion_fraction": 0.25,
    "seed": 7,
    "chunk_rows": 50,
}


class ChunkSource:
    """A raw source as the readers return it: chunks of typed columns; records the largest chunk read."""

    def __init__(self, table: pd.DataFrame, chunk_rows: int):
        self.table, self.chunk_rows, self.largest = table, chunk_rows, 0

    def chunks(self):
        for start in range(0, len(self.table), self.chunk_rows):
            chunk = self.table.iloc[start : start + self.chunk_rows].reset_index(drop=True)
            self.largest = max(self.largest, len(chunk))
            yield chunk


def raw_table(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    item = rng.zipf(1.5, rows) % 40
    return pd.DataFrame(
        {
            "query": np.arange(rows),
            "item": item,
            "colour": rng.integers(0, 5, rows),
            "price": rng.gamma(2.0, 3.0, rows),
            "click": (rng.random(rows) < 0.1 + 0.3 * (item == 1)).astype(np.int64),
        }
    )


def test_a_table_saved_in_chunks_loads_whole_and_by_row_group(tmp_path):
    dataset = ParquetTableDataset(str(tmp_path / "table"), row_group_rows=30)
    frame = raw_table(200)
    dataset.save(TableChunks(lambda: (frame.iloc[i : i + 70] for i in range(0, 200, 70))))
    table = dataset.load()
    assert len(table.paths) == 3 and len(table) == 200
    pd.testing.assert_frame_equal(table.read(), frame.reset_index(drop=True))
    assert [len(table.read_row_group(group)) for group in table.row_groups] == [30, 30, 10] * 2 + [30, 30]
    pd.testing.assert_frame_equal(table.head(65), frame.iloc[:65])


def test_a_failed_save_keeps_the_previous_table(tmp_path):
    dataset = ParquetTableDataset(str(tmp_path / "table"))
    dataset.save(raw_table(10))

    def broken():
        yield raw_table(10, seed=1)
        raise ValueError("the raw file is malformed")

    with pytest.raises(DatasetError, match="malformed"):
        dataset.save(TableChunks(broken))
    pd.testing.assert_frame_equal(dataset.load().read(), raw_table(10))
    with pytest.raises(DatasetError, match="chunk 1 has columns"):
        dataset.save([raw_table(5), raw_table(5).drop(columns="price")])
    assert list(tmp_path.iterdir()) == [tmp_path / "table"]


def test_row_splits_are_seeded_per_chunk_and_near_their_fractions():
    first = row_splits(3, 20000, PARAMS)
    assert (first == row_splits(3, 20000, PARAMS)).all()
    assert not (first == row_splits(4, 20000, PARAMS)).all()
    shares = np.bincount(first, minlength=3) / len(first)
    assert shares[VALIDATION] == pytest.approx(0.2, abs=0.01)
    assert shares[POOL] == pytest.approx(0.8 * 0.75, abs=0.01)


def test_streaming_encoders_match_the_training_rows_and_read_one_chunk_at_a_time():
    raw = raw_table()
    source = ChunkSource(raw, chunk_rows=64)
    encoders = fit_streaming_encoders(source, PARAMS)
    assert source.largest == 64
    splits = np.concatenate([row_splits(i, len(c), PARAMS) for i, c in enumerate(ChunkSource(raw, 64).chunks())])
    training = raw[splits != VALIDATION]
    counts = training["item"].value_counts()
    assert encoders["categorical"]["item"] == sorted(counts[counts >= 3].index.tolist())
    assert set(encoders["categorical"]) == {"item", "colour"}  # query dropped, click a label, price dense
    assert encoders["dense"]["price"]["mean"] == pytest.approx(training["price"].mean())
    assert encoders["dense"]["price"]["std"] == pytest.approx(training["price"].std(ddof=0))


@pytest.mark.parametrize(
    "option",
    [{"value_codes": {"columns": ["price"], "min_count": 3}}, {"piecewise_linear": {"columns": ["price"], "bins": 4}}],
)
def test_streaming_refuses_encodings_fitted_on_a_whole_table(option):
    with pytest.raises(ValueError, match=f"{next(iter(option))} are fitted on tables held in memory"):
        fit_streaming_encoders(ChunkSource(raw_table(), 64), {**PARAMS, **option})


def test_streaming_preprocessing_writes_every_row_once_in_its_split(tmp_path):
    raw = raw_table()
    encoders = fit_streaming_encoders(ChunkSource(raw, 64), PARAMS)
    encoded_dataset = ParquetTableDataset(str(tmp_path / "encoded"))
    encoded_dataset.save(encode_training_rows(ChunkSource(raw, 64), encoders, PARAMS))
    encoded = encoded_dataset.load()
    assert len(encoded) == len(raw) and len(encoded.paths) == -(-len(raw) // 64)
    tables = {}
    for name, chunks in zip(("train", "pool", "fusion", "validation"), split_encoded_rows(encoded, PARAMS)):
        dataset = ParquetTableDataset(str(tmp_path / name))
        dataset.save(chunks)
        tables[name] = dataset.load()
    splits = encoded.read([SPLIT_COLUMN])[SPLIT_COLUMN]
    assert len(tables["pool"]) + len(tables["fusion"]) == len(tables["train"]) == (splits != VALIDATION).sum()
    assert len(tables["validation"]) == (splits == VALIDATION).sum()
    assert max(len(tables["pool"].read_row_group(g)) for g in tables["pool"].row_groups) <= PARAMS["chunk_rows"]
    assert SPLIT_COLUMN not in tables["train"].columns
    schema = build_feature_schema(encoders, tables["train"])
    assert schema["tasks"][0]["train_positive_rate"] == pytest.approx(tables["train"].read()["label_click"].mean())


@pytest.fixture
def encoded_table(tmp_path):
    encoders = fit_streaming_encoders(ChunkSource(raw_table(), 64), PARAMS)
    dataset = ParquetTableDataset(str(tmp_path / "encoded"), row_group_rows=40)
    dataset.save(encode_training_rows(ChunkSource(raw_table(), 64), encoders, PARAMS))
    return dataset.load(), build_feature_schema(encoders, dataset.load())


def test_streamed_batches_cover_every_row_once(encoded_table):
    table, schema = encoded_table
    streamed = StreamingTabularData(table, schema, shuffle_buffer_rows=100)
    in_memory = TabularData.from_frame(table.read(), schema)
    ordered = [batch for batch, _ in streamed.batches(32)]
    assert all(len(batch.dense) == 32 for batch in ordered[:-1])
    assert torch.equal(torch.cat([b.categorical for b in ordered]), in_memory.categorical)
    shuffled = list(streamed.batches(32, torch.Generator().manual_seed(0)))
    rows = torch.cat([batch.categorical for batch, _ in shuffled])
    assert len(rows) == len(table) and not torch.equal(rows, in_memory.categorical)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(rows) == key(in_memory.categorical)
    assert torch.equal(streamed.labels, in_memory.labels)


def test_tables_are_streamed_above_the_in_memory_limit(encoded_table):
    table, schema = encoded_table
    assert isinstance(tabular_data(table, schema, max_in_memory_rows=None), TabularData)
    assert isinstance(tabular_data(table, schema, max_in_memory_rows=len(table)), TabularData)
    assert isinstance(tabular_data(table, schema, max_in_memory_rows=len(table) - 1), StreamingTabularData)

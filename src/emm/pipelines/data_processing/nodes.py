"""Thin, pure preprocessing nodes: tasks and columns come from parameters, nothing is dataset-specific.

Two ways through, one encoding: tables that fit in memory (Census-Income) are read whole and split
stratified on the first task; large ones (``data_processing.streaming: true``: Ali-CCP, AliExpress) are
read chunk by chunk from their raw source, encoders fitted in one pass, rows encoded and written to
partitioned Parquet in a second, each row drawn into pool / fusion / validation rows by a seeded generator
per chunk (the same draw in both passes). Memory then holds one chunk plus the encoders' counts per distinct
value, whatever the number of rows.

Encoders are fitted on the training file only. Categorical codes: 1..n for the values seen in training,
0 for any other value. Dense columns: optionally log1p, then standardised with training mean and std; and,
for the dense columns listed under ``value_codes``, a categorical twin ``<column>=`` coding the exact value
(values seen at least ``min_count`` times in training, rarer ones share code 0). An MLP cannot cut a number
at arbitrary thresholds the way a tree does; the twin lets it learn one embedding per frequent value
(capital gains of exactly 15024, say), which on Census-Income lifts a single MLP's income AUC from about
0.946 to 0.951 (docs/results.md). The dense columns listed under ``piecewise_linear`` also get a
piecewise-linear encoding (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
Learning", 2022): ``bins`` bins between training quantiles, one dense column ``<column>#<j>`` per bin, 0 below
it, 1 above it, the position within it in between, so that a first layer can give every stretch of the
number its own slope (docs/method.md, "Features").
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from emm.tables import ParquetTable, TableChunks, rechunk

logger = logging.getLogger(__name__)

UNSEEN_CODE = 0


def label_column(task_name: str) -> str:
    return f"label_{task_name}"


def value_code_column(dense_column: str) -> str:
    return f"{dense_column}="


def bin_columns(dense_column: str, edges: list[float]) -> list[str]:
    """The piecewise-linear encoding's columns of a dense column: one per bin between its ``edges``."""
    return [f"{dense_column}#{j}" for j in range(len(edges) - 1)]


def _require_columns(table: pd.DataFrame, columns: list[str], role: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise KeyError(
            f"{role} {missing} not found in the raw table; its columns are {list(table.columns)}"
        )


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna().to_numpy().nonzero()[0]
    if len(bad):
        raise ValueError(
            f"Dense column {column!r} has a non-numeric value {table[column].iloc[bad[0]]!r} in row {bad[0] + 1} "
            f"({len(bad)} such rows)"
        )
    return values.to_numpy(np.float64)


def _declared_columns(table: pd.DataFrame, params: dict) -> list[str]:
    """The tasks' label columns, once the tasks, dense columns and columns to drop are checked against
    ``table``."""
    if not params["tasks"]:
        raise ValueError("At least one task must be declared under data_processing.tasks")
    task_columns = [task["column"] for task in params["tasks"]]
    _require_columns(table, task_columns, "Task label columns")
    _require_columns(table, params["dense_columns"], "Dense columns")
    _require_columns(table, params.get("drop_columns", []), "Columns to drop")
    return task_columns


def _dense_columns_of(table: pd.DataFrame, option: dict, params: dict, dense: list[str], key: str) -> list[str]:
    """The feature columns among those an option of dense columns (``value_codes``, ``piecewise_linear``)
    names, checked against the declared ``dense_columns``; a dense column used as a label is left out."""
    _require_columns(table, option["columns"], f"{key} columns")
    not_dense = [column for column in option["columns"] if column not in params["dense_columns"]]
    if not_dense:
        raise ValueError(f"{key} columns {not_dense} are not dense columns {params['dense_columns']}")
    return [column for column in option["columns"] if column in dense]


def _bin_edges(values: np.ndarray, bins: int) -> list[float]:
    """``bins`` + 1 training quantiles, equal ones merged: a column with few distinct values gets fewer
    bins (a 0/1 column one, a constant none)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    return edges.tolist() if len(edges) > 1 else []


def _log_scaled(values: np.ndarray, column: str) -> np.ndarray:
    if (values < 0).any():
        raise ValueError(f"Dense column {column!r} has negative values and cannot be log-scaled")
    return np.log1p(values)


def fit_encoders(raw_train: pd.DataFrame, params: dict) -> dict:
    """Decide the features (every column but dropped and label columns) and fit their encoders."""
    tasks = params["tasks"]
    task_columns = _declared_columns(raw_train, params)
    for task in tasks:
        positives = raw_train[task["column"]].isin(task["positive"]).sum()
        if positives == 0 or positives == len(raw_train):
            raise ValueError(
                f"Task {task['name']!r}: column {task['column']!r} has {positives} of {len(raw_train)} rows with "
                f"a positive value {task['positive']}; values seen: {raw_train[task['column']].unique()[:10].tolist()}"
            )

    excluded = set(params.get("drop_columns", [])) | set(task_columns)
    features = [column for column in raw_train.columns if column not in excluded]
    dense = [column for column in params["dense_columns"] if column in features]
    categorical = [column for column in features if column not in dense]
    log_scaled = set(params.get("log_scaled_columns", []))

    piecewise_linear = params.get("piecewise_linear")
    binned = _dense_columns_of(raw_train, piecewise_linear, params, dense, "piecewise_linear") if piecewise_linear else []
    dense_encoders, bin_edges = {}, {}
    for column in dense:
        values = _numeric(raw_train, column)
        if column in log_scaled:
            values = _log_scaled(values, column)
        dense_encoders[column] = {
            "log1p": column in log_scaled,
            "mean": float(values.mean()),
            "std": float(values.std()) or 1.0,
        }
        if column in binned:
            bin_edges[column] = _bin_edges(values, piecewise_linear["bins"])
    value_codes = {}
    if params.get("value_codes"):
        min_count = params["value_codes"]["min_count"]
        for column in _dense_columns_of(raw_train, params["value_codes"], params, dense, "value_codes"):
            counts = raw_train[column].value_counts()
            value_codes[column] = sorted(counts[counts >= min_count].index.tolist(), key=float)
    return {
        "categorical": {column: sorted(raw_train[column].unique().tolist()) for column in categorical},
        "dense": dense_encoders,
        "value_codes": value_codes,
        "bin_edges": bin_edges,
        "tasks": [
            {"name": t["name"], "column": t["column"], "positive": list(t["positive"])} for t in tasks
        ],
    }


def encode_table(raw: pd.DataFrame, encoders: dict) -> pd.DataFrame:
    """Features as codes and scaled floats, plus one 0/1 label column per task."""
    _require_columns(raw, [task["column"] for task in encoders["tasks"]], "Task label columns")
    encoded = encode_features(raw, encoders)
    for task in encoders["tasks"]:
        encoded[label_column(task["name"])] = raw[task["column"]].isin(task["positive"]).to_numpy(np.float32)
    return encoded


def feature_columns(encoders: dict) -> list[str]:
    """The raw columns the encoders read: the categorical ones, then the dense ones."""
    return [*encoders["categorical"], *encoders["dense"]]


def encode_features(raw: pd.DataFrame, encoders: dict) -> pd.DataFrame:
    """Features as codes and scaled floats; label columns are neither needed nor read, so that rows to
    predict (serving) are encoded exactly as the training rows were."""
    _require_columns(raw, feature_columns(encoders), "Feature columns")
    numbers = {column: _numeric(raw, column) for column in encoders["dense"]}
    columns: dict[str, np.ndarray] = {}
    for column, vocabulary in encoders["categorical"].items():
        columns[column] = _codes(raw[column], vocabulary)
    for column, vocabulary in encoders["value_codes"].items():
        columns[value_code_column(column)] = _value_codes(numbers[column], vocabulary)
    unscaled = {}  # after log1p, before standardising: where the bin edges were fitted
    for column, scaler in encoders["dense"].items():
        values = numbers[column]
        if scaler["log1p"]:
            values = np.log1p(np.clip(values, 0, None))
        unscaled[column] = values
        columns[column] = ((values - scaler["mean"]) / scaler["std"]).astype(np.float32)
    for column, edges in encoders["bin_edges"].items():
        columns.update(zip(bin_columns(column, edges), _piecewise_linear(unscaled[column], edges)))
    return pd.DataFrame(columns, index=pd.RangeIndex(len(raw)))


def _piecewise_linear(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """[n_bins, N]: each value's place in each bin between ``edges``, clipped to [0, 1]."""
    lower, upper = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return np.clip((values[None, :] - lower) / (upper - lower), 0.0, 1.0).astype(np.float32)


def _codes(values: pd.Series, vocabulary: list[str]) -> np.ndarray:
    codes = pd.Index(vocabulary).get_indexer(values)  # -1 for values unseen in training
    return np.where(codes >= 0, codes + 1, UNSEEN_CODE).astype(np.int32)


def _value_codes(values: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Codes of a dense column's exact values, matched as numbers: the vocabulary holds the training file's
    text ("15024"), and rows sent as numbers (15024.0, the served model's input) must get the same code."""
    codes = {float(value): code for code, value in enumerate(vocabulary, start=1)}
    return pd.Series(values).map(codes).fillna(UNSEEN_CODE).to_numpy(np.int32)


def split_validation_test(encoded: pd.DataFrame, encoders: dict, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the held-out file into validation and test, stratified on the first task's label."""
    return _split_on_first_task(encoded, encoders, params["seed"], train_size=params["validation_fraction"])


def split_pool_fusion(
    train: pd.DataFrame | ParquetTable, encoders: dict, params: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows the pool models train on, and rows held out of the pool for training the fusion.

    A fused model trained on the rows its frozen components were fitted to learns to trust features that
    are over-confident exactly there (the stacking problem); the paper's setting, trained models collected
    from elsewhere, has no such overlap. ``fusion_fraction`` of the training file, stratified on the first
    task, is kept away from the pool; 0 gives both stages the whole file.
    """
    if isinstance(train, ParquetTable):
        train = train.read()
    fraction = params["fusion_fraction"]
    if fraction == 0:
        return train, train
    if not 0 < fraction < 1:
        raise ValueError(f"fusion_fraction must be in [0, 1), got {fraction}")
    return _split_on_first_task(train, encoders, params["seed"], test_size=fraction)


def _split_on_first_task(
    table: pd.DataFrame, encoders: dict, seed: int, **size: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two seeded parts of ``table`` stratified on the first task's label; ``size`` is ``train_size`` or
    ``test_size`` as scikit-learn takes them."""
    first, second = train_test_split(
        table, random_state=seed, stratify=table[label_column(encoders["tasks"][0]["name"])], **size
    )
    return first.reset_index(drop=True), second.reset_index(drop=True)


def build_feature_schema(encoders: dict, train: pd.DataFrame | ParquetTable) -> dict:
    """What models need to know about the encoded tables: columns, vocabularies, tasks."""
    label_columns = [label_column(task["name"]) for task in encoders["tasks"]]
    labels = train.read(label_columns) if isinstance(train, ParquetTable) else train[label_columns]
    schema = {
        "categorical": [
            {"name": column, "vocabulary_size": len(vocabulary) + 1}
            for column, vocabulary in encoders["categorical"].items()
        ]
        + [
            {"name": value_code_column(column), "vocabulary_size": len(vocabulary) + 1}
            for column, vocabulary in encoders["value_codes"].items()
        ],
        "dense": list(encoders["dense"])
        + [name for column, edges in encoders["bin_edges"].items() for name in bin_columns(column, edges)],
        "tasks": [
            {
                **task,
                "label_column": label_column(task["name"]),
                "train_positive_rate": float(labels[label_column(task["name"])].mean()),
            }
            for task in encoders["tasks"]
        ],
    }
    logger.info(
        "Feature schema: %d categorical, %d dense columns; tasks %s",
        len(schema["categorical"]),
        len(schema["dense"]),
        {t["name"]: round(t["train_positive_rate"], 4) for t in schema["tasks"]},
    )
    return schema


# --- streaming: tables larger than memory ---------------------------------------------------------------
SPLIT_COLUMN = "split"
POOL, FUSION, VALIDATION = 0, 1, 2


def _source_chunks(raw, params: dict, description: str):
    """The raw source's chunks, rows counted on a progress bar; ``data_processing.source`` holds the
    reader's options (AliExpress: the countries)."""
    with tqdm(desc=description, unit=" rows", unit_scale=True, mininterval=2.0) as bar:
        for chunk in raw.chunks(**(params.get("source") or {})):
            bar.update(len(chunk))
            yield chunk


def row_splits(chunk_index: int, n_rows: int, params: dict) -> np.ndarray:
    """Each row of a chunk drawn into the validation rows (``validation_fraction``), else the fusion rows
    (``fusion_fraction`` of the rest) or the pool rows; seeded per chunk, so every pass draws the same."""
    draws = np.random.default_rng([params["seed"], chunk_index]).random(n_rows)
    validation, fusion = params["validation_fraction"], params["fusion_fraction"]
    fusion_limit = validation + (1 - validation) * fusion
    return np.where(draws < validation, VALIDATION, np.where(draws < fusion_limit, FUSION, POOL)).astype(np.int8)


def fit_streaming_encoders(raw_train, params: dict) -> dict:
    """``fit_encoders`` in one pass over the raw chunks, validation rows left out. Categorical values seen
    fewer than ``min_count`` times share code 0 with unseen ones; dense columns are standardised."""
    tasks = params["tasks"]
    for option in ("value_codes", "piecewise_linear"):
        if params.get(option):
            raise ValueError(f"{option} are fitted on tables held in memory; remove them or set streaming: false")
    log_scaled = set(params.get("log_scaled_columns", []))
    counts: dict[str, pd.Series] = {}
    sums: dict[str, np.ndarray] = {}
    rows, columns = 0, None
    for index, chunk in enumerate(_source_chunks(raw_train, params, "fitting encoders")):
        if columns is None:
            columns = list(chunk.columns)
            task_columns = _declared_columns(chunk, params)
            positives = dict.fromkeys(task_columns, 0)
            excluded = set(params.get("drop_columns", [])) | set(task_columns) | set(params["dense_columns"])
            categorical = [column for column in columns if column not in excluded]
        elif list(chunk.columns) != columns:
            raise ValueError(f"Chunk {index} of the raw training data has columns {list(chunk.columns)}, not {columns}")
        chunk = chunk[row_splits(index, len(chunk), params) != VALIDATION]
        rows += len(chunk)
        for column in categorical:
            seen = chunk[column].value_counts()
            counts[column] = seen if column not in counts else counts[column].add(seen, fill_value=0)
        for column in params["dense_columns"]:
            values = _numeric(chunk, column)
            if column in log_scaled:
                values = _log_scaled(values, column)
            sums[column] = sums.get(column, 0) + np.array([values.sum(), np.square(values).sum()])
        for task in tasks:
            positives[task["column"]] += int(chunk[task["column"]].isin(task["positive"]).sum())
    if columns is None or rows == 0:
        raise ValueError("The raw training data has no rows outside the validation rows")
    for task in tasks:
        if positives[task["column"]] in (0, rows):
            raise ValueError(
                f"Task {task['name']!r}: column {task['column']!r} has {positives[task['column']]} of {rows} "
                f"training rows with a positive value {task['positive']}"
            )
    min_count = params.get("min_count", 1)
    dense = {}
    for column, (total, squares) in sums.items():
        mean = total / rows
        dense[column] = {
            "log1p": column in log_scaled,
            "mean": float(mean),
            "std": float(np.sqrt(max(squares / rows - mean**2, 0.0))) or 1.0,
        }
    logger.info("Fitted encoders on %d training rows (validation rows left out)", rows)
    return {
        "categorical": {
            column: sorted(seen[seen >= min_count].index.tolist()) for column, seen in counts.items()
        },
        "dense": dense,
        "value_codes": {},
        "bin_edges": {},
        "tasks": [{"name": t["name"], "column": t["column"], "positive": list(t["positive"])} for t in tasks],
    }


def encode_training_rows(raw_train, encoders: dict, params: dict) -> TableChunks:
    """The training file encoded chunk by chunk, with each row's ``split`` (pool, fusion or validation)."""

    def chunks():
        for index, chunk in enumerate(_source_chunks(raw_train, params, "encoding training rows")):
            encoded = encode_table(chunk, encoders)
            encoded[SPLIT_COLUMN] = row_splits(index, len(chunk), params)
            yield encoded

    return TableChunks(chunks)


def encode_rows(raw, encoders: dict, params: dict) -> TableChunks:
    """A raw file encoded chunk by chunk."""
    return TableChunks(lambda: (encode_table(chunk, encoders) for chunk in _source_chunks(raw, params, "encoding")))


def split_encoded_rows(encoded_train: ParquetTable, params: dict) -> tuple[TableChunks, ...]:
    """The encoded training file's rows as four tables: ``train`` (pool and fusion rows, for models trained
    on everything), ``pool_train``, ``fusion_train`` and ``validation``; each read and written in chunks."""

    def rows_of(splits: tuple[int, ...]) -> TableChunks:
        def chunks():
            for chunk in encoded_train.iter_chunks():
                kept = chunk[chunk[SPLIT_COLUMN].isin(splits)]
                yield kept.drop(columns=SPLIT_COLUMN).reset_index(drop=True)

        return TableChunks(lambda: rechunk(chunks(), params.get("chunk_rows", 262144)))

    return rows_of((POOL, FUSION)), rows_of((POOL,)), rows_of((FUSION,)), rows_of((VALIDATION,))

"""Headed CSV files read in chunks of typed columns, every bad value reported with its file and line.

The readers of Ali-CCP and AliExpress return a source whose ``chunks()`` yields DataFrames of integer
columns (ids, labels) and float columns (dense features), so nothing downstream parses text. Memory holds
one chunk of ``chunk_rows`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from kedro.io import DatasetError


def read_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [name.strip('"') for name in handle.readline().rstrip("\r\n").split(",")]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error


def typed_csv_chunks(
    path: Path,
    integer_columns: list[str],
    float_columns: list[str],
    chunk_rows: int,
    names: list[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Chunks of ``path`` with these columns (others are left out), typed int64 / float64.

    The file has a header line unless ``names`` gives its columns. A line with more or fewer fields than
    the header, an empty field, or a value that is not a number stops the read with the line at fault.
    """
    header = names or read_header(path)
    wanted = integer_columns + float_columns
    missing = [column for column in wanted if column not in header]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; the file's columns are {header}")
    first_line = 1 if names else 2  # file line of the first data row
    try:
        reader = pd.read_csv(
            path,
            header=None if names else 0,
            names=names,
            usecols=wanted,
            chunksize=chunk_rows,
            keep_default_na=False,  # "n/a", "null" and the like are bad values to report, not missing ones
            na_values=[""],
            skip_blank_lines=False,  # a blank line is a malformed row, and keeps line numbers true
            compression="infer",
        )
        for chunk in reader:
            yield typed_columns(chunk, integer_columns, float_columns, path, first_line)
            first_line += len(chunk)
    except pd.errors.ParserError as error:
        raise DatasetError(f"{path}: malformed line: {error}") from error
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error


def typed_columns(
    chunk: pd.DataFrame, integer_columns: list[str], float_columns: list[str], path: Path, first_line: int
) -> pd.DataFrame:
    """These columns of ``chunk`` (whose first row is line ``first_line`` of ``path``) as int64 / float64;
    an empty field or a value that is not such a number stops the read with its line and column."""
    columns = {}
    for column in integer_columns + float_columns:
        values = chunk[column]
        numeric = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        bad = numeric.isna().to_numpy()
        if column in integer_columns and not bad.any():
            fractional = (numeric.to_numpy() % 1 != 0) if numeric.dtype.kind == "f" else None
            if fractional is not None and fractional.any():
                bad = fractional
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = "an integer" if column in integer_columns else "a number"
            value = values.iloc[row]
            shown = "an empty field" if pd.isna(value) else repr(value)
            raise DatasetError(
                f"{path}, line {first_line + row}: column {column!r} holds {shown} where {kind} belongs "
                f"({int(bad.sum())} such lines in this chunk of {len(chunk)})"
            )
        columns[column] = numeric.to_numpy(np.int64 if column in integer_columns else np.float64)
    return pd.DataFrame(columns)

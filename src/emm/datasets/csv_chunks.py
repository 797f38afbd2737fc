"""Headed CSV files read in chunks of typed columns, every bad value reported with its file and line.

The readers of Ali-CCP and AliExpress return a source whose ``chunks()`` yields DataFrames of integer
columns (ids, labels) and float columns (dense features), so nothing downstream parses text. Memory holds
one chunk of ``chunk_rows`` rows.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from itertools import islice
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


def check_first_row_surplus(path: Path, line: int, width: int) -> None:
    """Line ``line`` of ``path`` (the first data row) must not have more than ``width`` fields. pandas
    refuses surplus fields on every later row, but takes them on the first one for an index (shifting every
    value one column) or, with ``index_col=False``, drops them unsaid."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            row = next(csv.reader(islice(handle, line - 1, line)), None)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error
    if row is not None and len(row) > width:
        raise DatasetError(f"{path}, line {line}: {len(row)} fields where {width} belong, one per column")


FIELD_COUNT_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def typed_csv_chunks(
    path: Path,
    integer_columns: list[str],
    float_columns: list[str],
    chunk_rows: int,
    names: list[str] | None = None,
    label_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """Chunks of ``path`` with these columns (others are left out), typed int64 / float64.

    The file has a header line unless ``names`` gives its columns. A line with more or fewer fields than
    the header, an empty field, or a value that is not a finite number stops the read with the line at
    fault; so does a value other than 0 and 1 in a ``label_columns`` column.
    """
    header = names or read_header(path)
    wanted = integer_columns + float_columns
    missing = [column for column in wanted if column not in header]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; the file's columns are {header}")
    first_line = 1 if names else 2  # file line of the first data row
    check_first_row_surplus(path, first_line, len(header))
    try:
        # Every column is parsed (no usecols): with usecols pandas drops a row's surplus fields unsaid.
        reader = pd.read_csv(
            path,
            header=None if names else 0,
            names=names,
            index_col=False,
            chunksize=chunk_rows,
            keep_default_na=False,  # "n/a", "null" and the like are bad values to report, not missing ones
            na_values=[""],
            skip_blank_lines=False,  # a blank line is a malformed row, and keeps line numbers true
            compression="infer",
        )
        for chunk in reader:
            table = typed_columns(chunk, integer_columns, float_columns, path, first_line)
            check_labels(table, label_columns, path, first_line)
            yield table
            first_line += len(chunk)
    except pd.errors.ParserError as error:
        count = FIELD_COUNT_ERROR.search(str(error))
        if count:
            expected, line, seen = count.groups()
            raise DatasetError(f"{path}, line {line}: {seen} fields where {expected} belong, one per column") from None
        raise DatasetError(f"{path}: malformed line: {error}") from error
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error


def typed_columns(
    chunk: pd.DataFrame, integer_columns: list[str], float_columns: list[str], path: Path, first_line: int
) -> pd.DataFrame:
    """These columns of ``chunk`` (whose first row is line ``first_line`` of ``path``) as int64 / float64;
    an empty field or a value that is not such a number (inf and nan included) stops the read with its line
    and column."""
    columns = {}
    for column in integer_columns + float_columns:
        values = chunk[column]
        numeric = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        # inf, nan and 1e999 parse as floats; a model fed them fails far from the file
        bad = ~np.isfinite(numeric.to_numpy(np.float64, na_value=np.nan))
        if column in integer_columns and not bad.any():
            fractional = (numeric.to_numpy() % 1 != 0) if numeric.dtype.kind == "f" else None
            if fractional is not None and fractional.any():
                bad = fractional
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = "an integer" if column in integer_columns else "a finite number"
            value = values.iloc[row]
            if isinstance(value, str):
                shown = repr(value)
            else:  # a number pandas parsed: shown as inf, not np.float64(inf)
                shown = "an empty field" if pd.isna(value) else str(value)
            raise DatasetError(
                f"{path}, line {first_line + row}: column {column!r} holds {shown} where {kind} belongs "
                f"({int(bad.sum())} such lines in this chunk of {len(chunk)})"
            )
        columns[column] = numeric.to_numpy(np.int64 if column in integer_columns else np.float64)
    return pd.DataFrame(columns)


def check_labels(table: pd.DataFrame, label_columns: Sequence[str], path: Path, first_line: int) -> None:
    """The ``label_columns`` of ``table`` (typed rows from line ``first_line`` of ``path``) hold only 0 and 1."""
    for column in label_columns:
        bad = ~table[column].isin((0, 1)).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{path}, line {first_line + row}: column {column!r} holds {table[column].iloc[row]} where a "
                f"label, 0 or 1, belongs ({int(bad.sum())} such lines in this chunk of {len(table)})"
            )

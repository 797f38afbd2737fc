"""Ali-CCP (Alibaba Click and Conversion Prediction, the ESMM paper's dataset) in both forms people download.

(a) The raw Tianchi release: ``sample_skeleton_{train,test}.csv`` lines
``sample_id,click,purchase,common_feature_id,feature_count,feature_list`` joined on the common-feature id
with ``common_features_{train,test}.csv`` lines ``common_feature_id,feature_count,feature_list``. A feature
list is entries separated by ``\\x01``, each ``field\\x02id\\x03value``.
(b) The widely shared preprocessed CSV: a header ``click,purchase,101,...,301[,...,D853]`` (torch-rechub),
or no header and the 20 columns ``click,purchase,101,...,301`` (PaddleRec's AITM files).

Both yield the same table: ``click``, ``purchase``, one int64 id column per sparse field and a float64
column ``D<field>`` per dense field. A field can hold several entries in a raw line (the user's category,
shop, brand and intention histories 109_14, 110_14, 127_14, 150_14); the entry with the largest value is
kept (the first on ties), its id as the sparse feature and its value as the dense one; an absent field
has id -1 and value 0. Rows with a purchase but no click are dropped (purchase is after click), counted
and logged.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from kedro.io import AbstractDataset, DatasetError

from emm.datasets.csv_chunks import check_first_row_surplus, check_labels, read_header, typed_columns, typed_csv_chunks

logger = logging.getLogger(__name__)

SPARSE_FIELDS = [
    "101", "121", "122", "124", "125", "126", "127", "128", "129",
    "205", "206", "207", "210", "216", "508", "509", "702", "853", "301",
    "109_14", "110_14", "127_14", "150_14",
]  # fmt: skip
DENSE_FIELDS = ["109_14", "110_14", "127_14", "150_14", "508", "509", "702", "853"]
LABELS = ["click", "purchase"]
# PaddleRec's AITM CSV files, whose test files carry no header.
HEADERLESS_COLUMNS = LABELS + [
    "101", "121", "122", "124", "125", "126", "127", "128", "129",
    "205", "206", "207", "216", "508", "509", "702", "853", "301",
]  # fmt: skip
ABSENT_ID = -1
ENTRY, FIELD_ID, ID_VALUE = "\x01", "\x02", "\x03"


def dense_column(field: str) -> str:
    return f"D{field}"


def drop_purchase_without_click(table: pd.DataFrame, counts: dict) -> pd.DataFrame:
    bad = (table["purchase"] > 0) & (table["click"] == 0)
    counts["dropped"] += int(bad.sum())
    counts["rows"] += len(table)
    if bad.any():
        table = table[~bad].reset_index(drop=True)
    return table


def _log_drops(where: str, counts: dict) -> None:
    if counts["dropped"]:
        logger.info(
            "%s: dropped %d of %d rows with a purchase but no click", where, counts["dropped"], counts["rows"]
        )


class AliCCPCSVFiles:
    """The preprocessed CSV form: one file or a glob of files (e.g. train and val) read in turn."""

    def __init__(self, filepath: str, chunk_rows: int):
        self.paths = sorted(Path(p) for p in glob.glob(filepath))
        if not self.paths:
            raise DatasetError(f"No Ali-CCP CSV file matches {filepath}")
        self.chunk_rows = chunk_rows

    def chunks(self) -> Iterator[pd.DataFrame]:
        for path in self.paths:
            header = read_header(path)
            names = None
            if header[0] != "click":
                if len(header) != len(HEADERLESS_COLUMNS):
                    raise DatasetError(
                        f"{path}: line 1 is no header (it starts {header[:3]}) and has {len(header)} fields; "
                        f"a header-less Ali-CCP file has the {len(HEADERLESS_COLUMNS)} columns {HEADERLESS_COLUMNS}"
                    )
                names = HEADERLESS_COLUMNS
            columns = names or header
            sparse = [c for c in columns if c in SPARSE_FIELDS]
            dense = [c for c in columns if c.startswith("D") and c[1:] in DENSE_FIELDS]
            counts = {"dropped": 0, "rows": 0}
            for chunk in typed_csv_chunks(
                path, LABELS + sparse, dense, self.chunk_rows, names=names, label_columns=LABELS
            ):
                yield drop_purchase_without_click(chunk, counts)
            _log_drops(str(path), counts)


class AliCCPCSVDataset(AbstractDataset[None, AliCCPCSVFiles]):
    """Read-only: the preprocessed Ali-CCP CSV (``filepath`` may be a glob), loaded as a chunk source."""

    def __init__(self, filepath: str, chunk_rows: int = 262144, metadata: dict | None = None):
        self._filepath = filepath
        self._chunk_rows = chunk_rows
        self.metadata = metadata

    def _load(self) -> AliCCPCSVFiles:
        return AliCCPCSVFiles(self._filepath, self._chunk_rows)

    def _save(self, data: Any) -> None:
        raise DatasetError("The raw Ali-CCP files are read-only")

    def _exists(self) -> bool:
        return bool(glob.glob(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "chunk_rows": self._chunk_rows}


def parse_feature_lists(
    lists: pa.Array, fields: list[str], line_of: Callable[[int], str], counts: np.ndarray | None = None
) -> pd.DataFrame:  # the text stays in Arrow arrays: no Python string per entry
    """The entries of ``lists`` (one feature list per row) whose field is in ``fields``, as a long table
    (row, field, id, value). ``line_of(row)`` names the file and line for errors; ``counts`` are the rows'
    declared feature counts, checked against their lists."""
    lists = pc.if_else(pc.equal(lists, ""), pa.scalar(None, pa.string()), lists)
    entries = pc.split_pattern(lists, ENTRY)
    if counts is not None:
        found = pc.fill_null(pc.list_value_length(entries), 0).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(found != counts)
        if len(wrong):
            row = int(wrong[0])
            raise DatasetError(
                f"{line_of(row)}: declares {counts[row]} features but its list has {found[row]} "
                f"(entries separated by \\x01)"
            )
    rows = pc.list_parent_indices(entries)
    flat = pc.list_flatten(entries)
    field_rest = _split_in_two(flat, FIELD_ID, rows, line_of, "field\\x02id")
    field, rest = pc.list_element(field_rest, 0), pc.list_element(field_rest, 1)
    id_value = _split_in_two(rest, ID_VALUE, rows, line_of, "id\\x03value", shown=flat)
    field_index = pc.index_in(field, value_set=pa.array(fields))  # null for fields not asked for
    keep = pc.is_valid(field_index)
    rows, field_index, id_value, shown = (pc.filter(a, keep) for a in (rows, field_index, id_value, flat))
    ids = _numbers(pc.list_element(id_value, 0), pa.int64(), rows, line_of, shown, "id")
    values = _numbers(pc.list_element(id_value, 1), pa.float64(), rows, line_of, shown, "value")
    return pd.DataFrame(
        {
            "row": rows.to_numpy(zero_copy_only=False),
            "field": pd.Categorical.from_codes(field_index.to_numpy(zero_copy_only=False), categories=fields),
            "id": ids,
            "value": values,
        }
    )


def _split_in_two(strings, separator, rows, line_of, layout, shown=None):
    parts = pc.split_pattern(strings, separator, max_splits=1)
    bad = np.flatnonzero(pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2)
    if len(bad):
        i = int(bad[0])
        entry = (shown if shown is not None else strings)[i].as_py()
        raise DatasetError(
            f"{line_of(rows[i].as_py())}: feature {entry!r} is not field\\x02id\\x03value "
            f"(no separator in its {layout} part)"
        )
    return parts


def _numbers(strings, kind, rows, line_of, shown, what) -> np.ndarray:
    try:
        numbers = pc.cast(strings, kind).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pattern = r"^-?\d+$" if kind == pa.int64() else r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
        bad = np.flatnonzero(~pc.match_substring_regex(strings, pattern).to_numpy(zero_copy_only=False))
        i = int(bad[0]) if len(bad) else 0
        raise DatasetError(f"{line_of(rows[i].as_py())}: feature {shown[i].as_py()!r} has a non-numeric {what}") from None
    # Arrow reads inf, nan and 1e999 as floats; a model fed them fails far from the file
    infinite = np.flatnonzero(~np.isfinite(numbers)) if kind == pa.float64() else []
    if len(infinite):
        i = int(infinite[0])
        raise DatasetError(f"{line_of(rows[i].as_py())}: feature {shown[i].as_py()!r} has a non-finite {what}")
    return numbers


def widen(entries: pd.DataFrame, n_rows: int, fields: list[str], dense_fields: list[str]) -> pd.DataFrame:
    """One row per input row: per field the id of its largest-valued entry and, for dense fields, that
    value (absent field: id -1, value 0)."""
    best = entries.sort_values(["row", "field", "value"], ascending=[True, True, False], kind="stable")
    best = best.drop_duplicates(["row", "field"])
    columns = {}
    for field in fields:
        of_field = best[best["field"] == field]
        ids = np.full(n_rows, ABSENT_ID, np.int64)
        ids[of_field["row"].to_numpy()] = of_field["id"].to_numpy()
        columns[field] = ids
        if field in dense_fields:
            values = np.zeros(n_rows, np.float64)
            values[of_field["row"].to_numpy()] = of_field["value"].to_numpy()
            columns[dense_column(field)] = values
    return pd.DataFrame(columns)


class AliCCPRawFiles:
    """The raw Tianchi form: a skeleton file and its common-features file, read as one joined table."""

    def __init__(self, skeleton: Path, common_features: Path, chunk_rows: int, fields: list[str], dense_fields: list[str]):
        for path in (skeleton, common_features):
            if not path.is_file():
                raise DatasetError(
                    f"Ali-CCP raw file not found: {path}. Download the Tianchi release (dataset 408) there, or "
                    "generate a synthetic one: python -m emm.synthetic ali-ccp --help"
                )
        self.skeleton, self.common_features = skeleton, common_features
        self.chunk_rows = chunk_rows
        self.fields, self.dense_fields = fields, dense_fields

    def _lines(self, path: Path, names: list[str]) -> Iterator[tuple[int, pd.DataFrame]]:
        """(first line number, chunk of string columns); a line without len(names) fields stops the read."""
        first_line = 1
        check_first_row_surplus(path, first_line, len(names))
        try:
            reader = pd.read_csv(
                path, header=None, names=names, dtype=str, chunksize=self.chunk_rows, index_col=False,
                keep_default_na=False, na_values=[""], skip_blank_lines=False, engine="c",
            )  # fmt: skip
            for chunk in reader:
                # a missing field reads as empty; only the feature list may be empty (no features)
                short = np.flatnonzero(chunk[names[:-1]].isna().any(axis=1).to_numpy())
                if len(short):
                    raise DatasetError(
                        f"{path}, line {first_line + int(short[0])}: fewer than the {len(names)} comma-separated "
                        f"fields {names}, or an empty one"
                    )
                chunk[names[-1]] = chunk[names[-1]].fillna("")
                yield first_line, chunk
                first_line += len(chunk)
        except pd.errors.ParserError as error:
            raise DatasetError(f"{path}: malformed line, not the {len(names)} fields {names}: {error}") from error

    def _common_table(self) -> pd.DataFrame:
        """Every common-feature id's fields, wide, indexed by the id."""
        path, parts, lines = self.common_features, [], []
        for first_line, chunk in self._lines(path, ["common_feature_id", "feature_count", "feature_list"]):
            counts = typed_columns(chunk, ["feature_count"], [], path, first_line)["feature_count"].to_numpy()
            entries = parse_feature_lists(
                pa.array(chunk["feature_list"], pa.string()), self.fields,
                lambda row, first=first_line: f"{path}, line {first + row}", counts,
            )  # fmt: skip
            part = widen(entries, len(chunk), self.fields, self.dense_fields)
            part.index = pd.Index(chunk["common_feature_id"].to_numpy())
            parts.append(part)
            lines.append(np.arange(first_line, first_line + len(chunk)))
        table = pd.concat(parts)
        duplicated = np.flatnonzero(table.index.duplicated())
        if len(duplicated):
            line = int(np.concatenate(lines)[duplicated[0]])
            raise DatasetError(f"{path}, line {line}: common-feature id {table.index[duplicated[0]]!r} appears twice")
        return table

    def chunks(self) -> Iterator[pd.DataFrame]:
        common = self._common_table()
        path = self.skeleton
        names = ["sample_id", "click", "purchase", "common_feature_id", "feature_count", "feature_list"]
        counts = {"dropped": 0, "rows": 0}
        for first_line, chunk in self._lines(path, names):
            line_of = lambda row, first=first_line: f"{path}, line {first + row}"  # noqa: E731
            integers = typed_columns(chunk, [*LABELS, "feature_count"], [], path, first_line)
            check_labels(integers, LABELS, path, first_line)
            own = widen(
                parse_feature_lists(
                    pa.array(chunk["feature_list"], pa.string()), self.fields, line_of,
                    integers["feature_count"].to_numpy(),
                ),
                len(chunk), self.fields, self.dense_fields,
            )  # fmt: skip
            positions = common.index.get_indexer(chunk["common_feature_id"])
            unknown = np.flatnonzero(positions < 0)
            if len(unknown):
                row = int(unknown[0])
                raise DatasetError(
                    f"{line_of(row)}: common-feature id {chunk['common_feature_id'].iloc[row]!r} is not in "
                    f"{self.common_features} ({len(unknown)} such lines in this chunk of {len(chunk)})"
                )
            shared = common.iloc[positions].reset_index(drop=True)
            joined = {name: integers[name].to_numpy() for name in LABELS}
            for field in self.fields:
                present = own[field].to_numpy() != ABSENT_ID
                joined[field] = np.where(present, own[field], shared[field])
                if field in self.dense_fields:
                    joined[dense_column(field)] = np.where(
                        present, own[dense_column(field)], shared[dense_column(field)]
                    )
            yield drop_purchase_without_click(pd.DataFrame(joined), counts)
        _log_drops(str(path), counts)


class AliCCPRawDataset(AbstractDataset[None, AliCCPRawFiles]):
    """Read-only: the raw Tianchi Ali-CCP files of one split, loaded as a chunk source (see the module).

    Memory: the common-features table, one row of ``len(fields) + len(dense_fields)`` numbers per
    common-feature id, plus one skeleton chunk of ``chunk_rows`` lines.
    """

    def __init__(
        self,
        skeleton: str,
        common_features: str,
        chunk_rows: int = 131072,
        fields: list[str] | None = None,
        dense_fields: list[str] | None = None,
        metadata: dict | None = None,
    ):
        self._skeleton, self._common_features = Path(skeleton), Path(common_features)
        self._chunk_rows = chunk_rows
        self._fields = list(fields or SPARSE_FIELDS)
        self._dense_fields = list(dense_fields or DENSE_FIELDS)
        self.metadata = metadata

    def _load(self) -> AliCCPRawFiles:
        return AliCCPRawFiles(self._skeleton, self._common_features, self._chunk_rows, self._fields, self._dense_fields)

    def _save(self, data: Any) -> None:
        raise DatasetError("The raw Ali-CCP files are read-only")

    def _exists(self) -> bool:
        return self._skeleton.is_file() and self._common_features.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"skeleton": str(self._skeleton), "common_features": str(self._common_features)}

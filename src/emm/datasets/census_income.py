"""The raw UCI Census-Income (KDD) files, read with their 42 documented columns, downloaded when absent."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)

UCI_BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"

# The 42 columns in file order, as census-income.names documents them.
CENSUS_COLUMNS = [
    "age",
    "class of worker",
    "detailed industry recode",
    "detailed occupation recode",
    "education",
    "wage per hour",
    "enroll in edu inst last wk",
    "marital stat",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "tax filer stat",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "instance weight",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veteran's admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
]


class CensusIncomeRawDataset(AbstractDataset[None, pd.DataFrame]):
    """One raw Census-Income file (``census-income.data`` or ``census-income.test``, gzipped or not).

    Looks for ``filepath`` then ``filepath.gz``. When neither exists and ``download`` is on, fetches ``url``
    (by default the UCI copy of the file) into the same folder first (atomically: an interrupted download
    leaves nothing behind). Every value is returned as a string with the leading space removed; a row that
    does not have the 42 fields, or a field spelling a non-finite number (``inf``, ``nan``, ``1e999``),
    stops the load with the file and line at fault.
    """

    def __init__(
        self,
        filepath: str,
        url: str | None = None,
        download: bool = True,
        metadata: dict | None = None,
    ):
        self._filepath = Path(filepath)
        self._url = url if url is not None else UCI_BASE_URL + self._filepath.name + ".gz"
        self._download = download
        self.metadata = metadata

    def _candidates(self) -> list[Path]:
        return [self._filepath, self._filepath.with_name(self._filepath.name + ".gz")]

    def _existing_path(self) -> Path | None:
        return next((path for path in self._candidates() if path.is_file()), None)

    def _load(self) -> pd.DataFrame:
        path = self._existing_path()
        if path is None:
            path = self._fetch()
        return read_census_file(path)

    def _fetch(self) -> Path:
        expected = " or ".join(str(p) for p in self._candidates())
        help_text = (
            f"Put the UCI Census-Income (KDD) file there ({expected}), or point EMM_CENSUS_DIR at the folder "
            "that holds census-income.data(.gz) and census-income.test(.gz)."
        )
        if not self._download:
            raise DatasetError(f"Raw file not found: {expected}. {help_text}")
        target = self._filepath.parent / Path(self._url.split("?")[0]).name
        logger.info("Raw file %s is missing: downloading %s", self._filepath, self._url)
        try:
            download(self._url, target)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise DatasetError(
                f"Raw file not found: {expected}, and downloading {self._url} failed ({error}). {help_text}"
            ) from error
        return target

    def _save(self, data: pd.DataFrame) -> None:
        raise DatasetError("The raw Census-Income files are read-only")

    def _exists(self) -> bool:
        return self._existing_path() is not None

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "url": self._url}


def download(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Fetch ``url`` (http, https or file) to ``target`` through a temporary file renamed on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def read_census_file(path: Path) -> pd.DataFrame:
    """Parse one raw file; every field stays a string (``?`` included), leading spaces stripped."""
    try:
        table = pd.read_csv(
            path,
            header=None,
            dtype=str,
            keep_default_na=False,  # "None", "NA" and the like are genuine category values here
            na_values=[""],  # Census marks unknowns with "?", so an empty field is a missing one
            skipinitialspace=True,
            compression="infer",
        )
    except pd.errors.ParserError as error:
        raise DatasetError(f"{path}: malformed row: {error}") from error
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read ({error})") from error
    if table.shape[1] != len(CENSUS_COLUMNS):
        raise DatasetError(
            f"{path}: line 1 has {table.shape[1]} fields; Census-Income rows have {len(CENSUS_COLUMNS)}"
        )
    incomplete = table.isna().any(axis=1).to_numpy().nonzero()[0]
    if len(incomplete):
        line = int(incomplete[0]) + 1
        fields = int(table.iloc[incomplete[0]].notna().sum())
        raise DatasetError(
            f"{path}: line {line} has {fields} non-empty fields; Census-Income rows have {len(CENSUS_COLUMNS)} "
            f"({len(incomplete)} such rows in the file)"
        )
    table.columns = CENSUS_COLUMNS
    _refuse_non_finite(table, path)
    return table


def _refuse_non_finite(table: pd.DataFrame, path: Path) -> None:
    """Any column may be declared dense (``dense_columns``), and ``inf``, ``nan`` or ``1e999`` there would
    pass as a number and reach the encoders as NaN: refused in every column. Each column's distinct values
    are parsed, not its rows (Census columns hold few)."""
    for column in table.columns:
        values = pd.Series(table[column].unique())
        infinite = np.isinf(pd.to_numeric(values, errors="coerce").to_numpy(np.float64))
        not_a_number = values.str.lower().str.lstrip("+-").eq("nan").to_numpy()
        bad = values[infinite | not_a_number]
        if len(bad):
            rows = np.flatnonzero(table[column].isin(bad).to_numpy())
            raise DatasetError(
                f"{path}: line {rows[0] + 1}, column {column!r} holds {table[column].iloc[rows[0]]!r}, which is "
                f"not a finite number ({len(rows)} such rows in the file)"
            )

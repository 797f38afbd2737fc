"""AliExpress (the AITM paper's search logs, one folder per country): ``train.csv`` and ``test.csv`` with
the columns ``search_id, categorical_1..16, numerical_1..63, click, conversion``.

``filepath`` names one file, or every country's with ``{country}`` in it
(``data/01_raw/aliexpress/AliExpress_{country}/train.csv``); the countries are chosen where the chunks are
read, from the dataset's parameters (``data_processing.source.countries``). With several countries the
table gets a ``country`` column (its index in that list), a feature like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from emm.datasets.csv_chunks import typed_csv_chunks

CATEGORICAL = [f"categorical_{i}" for i in range(1, 17)]
NUMERICAL = [f"numerical_{i}" for i in range(1, 64)]
LABELS = ["click", "conversion"]
COUNTRY_FIELD = "{country}"


class AliExpressFiles:
    def __init__(self, filepath: str, chunk_rows: int):
        self.filepath = filepath
        self.chunk_rows = chunk_rows

    def paths(self, countries: list[str] | None) -> list[Path]:
        if COUNTRY_FIELD not in self.filepath:
            if countries:
                raise DatasetError(
                    f"Countries {countries} were asked for, but the AliExpress filepath {self.filepath} has no "
                    f"{COUNTRY_FIELD} field; put it where the country code goes, or leave `countries` out"
                )
            return [Path(self.filepath)]
        if not countries:
            raise DatasetError(
                f"The AliExpress filepath {self.filepath} has a {COUNTRY_FIELD} field: name the countries "
                "under data_processing.source.countries (e.g. [NL])"
            )
        return [Path(self.filepath.replace(COUNTRY_FIELD, country)) for country in countries]

    def chunks(self, countries: list[str] | None = None) -> Iterator[pd.DataFrame]:
        paths = self.paths(countries)
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise DatasetError(
                f"AliExpress files not found: {missing}. Download the Tianchi release (dataset 74690) there, or "
                "generate a synthetic one: python -m emm.synthetic aliexpress --help"
            )
        for index, path in enumerate(paths):
            for chunk in typed_csv_chunks(
                path, ["search_id", *CATEGORICAL, *LABELS], NUMERICAL, self.chunk_rows, label_columns=LABELS
            ):
                if len(paths) > 1:
                    chunk.insert(0, "country", index)
                yield chunk


class AliExpressDataset(AbstractDataset[None, AliExpressFiles]):
    """Read-only: one split of AliExpress, loaded as a chunk source (see the module)."""

    def __init__(self, filepath: str, chunk_rows: int = 262144, metadata: dict | None = None):
        self._filepath = filepath
        self._chunk_rows = chunk_rows
        self.metadata = metadata

    def _load(self) -> AliExpressFiles:
        return AliExpressFiles(self._filepath, self._chunk_rows)

    def _save(self, data: Any) -> None:
        raise DatasetError("The raw AliExpress files are read-only")

    def _exists(self) -> bool:
        return COUNTRY_FIELD in self._filepath or Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "chunk_rows": self._chunk_rows}

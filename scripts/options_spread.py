"""Mean and spread over seeds of the option tables written by fusion_options.py and pool_options.py
(which write them with :func:`write_table` and average pool models' logits with :func:`logit`).

    .venv/bin/python scripts/options_spread.py --out <table>.md <seed 42>.csv <seed 43>.csv ...

Each CSV is one seed's run of the same script (an `option` column, then one AUC column per measurement);
options are matched by name and kept in the first file's order. Every cell of the table is the mean ±
standard deviation (ddof 1) over the files (the mean alone from one file); an option missing from a file is
an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped away from 0 and 1 so that averaging them stays finite."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def write_table(table: pd.DataFrame, out: Path, title: str) -> str:
    """One seed's ``table`` (an `option` column, then AUCs) as Markdown in ``out`` under ``title``, and as
    CSV beside it (what :func:`spread` reads); returns the Markdown. ``out``'s folder is made if missing, so
    that minutes of training are not lost to it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    header = "| option | " + " | ".join(table.columns[1:]) + " |"
    lines = [title, "", header, "|---|" + "---|" * (len(table.columns) - 1)]
    for row in table.itertuples(index=False):
        cells = ["" if pd.isna(value) else f"{value:.5f}" for value in row[1:]]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def spread(tables: list[pd.DataFrame], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per option (rows in the first table's order) and column: the mean and the standard deviation."""
    options = list(tables[0]["option"])
    for table, name in zip(tables, names):
        missing = [option for option in options if option not in set(table["option"])]
        if missing:
            raise ValueError(f"{name} has no row for {missing}")
    stacked = pd.concat([table.set_index("option").loc[options] for table in tables])
    grouped = stacked.groupby(level=0, sort=False)
    return grouped.mean().loc[options], grouped.std(ddof=1).loc[options]


def markdown(means: pd.DataFrame, deviations: pd.DataFrame, seeds: int) -> str:
    lines = [
        f"AUC, mean ± standard deviation over {seeds} seeds:" if seeds > 1 else "AUC, one seed:",
        "",
        "| option | " + " | ".join(means.columns) + " |",
        "|---|" + "---|" * len(means.columns),
    ]
    for option in means.index:
        cells = [
            "" if pd.isna(mean) else f"{mean:.5f}" if pd.isna(deviation) else f"{mean:.5f} ± {deviation:.5f}"
            for mean, deviation in zip(means.loc[option], deviations.loc[option])
        ]
        lines.append(f"| {option} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_spread(paths: list[Path], out: Path) -> str:
    """The spread of the seeds' CSVs ``paths`` as Markdown in ``out``; returns it."""
    means, deviations = spread([pd.read_csv(path) for path in paths], [str(path) for path in paths])
    text = markdown(means, deviations, len(paths))
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("tables", nargs="+", type=Path)
    arguments = parser.parse_args()
    print(write_spread(arguments.tables, arguments.out))


if __name__ == "__main__":
    main()

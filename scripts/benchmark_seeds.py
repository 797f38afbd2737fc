"""Table I with spread: one dataset's comparison retrained for several model seeds on the same split.

    .venv/bin/python scripts/benchmark_seeds.py [--namespace census] [--seeds 42,43,44] [--threads 1]
                                                [--out data/08_reporting/census/seeds] [--collected]

The split is the same for every seed (`data_processing.seed` is not touched). Each seed is one
`kedro run --pipelines=<namespace> --params=<namespace>.training.seed=<seed>` in the `seeds` configuration
environment (conf/seeds: the Table II ablations left out), so every model of Table I -- pool, EMM, EMM+,
baselines -- is retrained from that seed (each model's own seed derives from it and the model's name) and
evaluated on the same test rows; each run is one MLflow run. After each run its Table I, AUCs and cost table
are copied to `<out>/seed_<seed>/`; at the end `<out>/table_1_seeds.{csv,md}` hold every model's mean and
standard deviation per task (best mean per task in bold, second in italics).

Seeds can run in separate checkouts (or machines) at once, each with its own ``--seeds``; copy their
``seed_<seed>/`` folders into one ``--out`` and ``--collected`` writes the table from them without running.

The runs use ``--threads`` CPU threads (OMP_NUM_THREADS, default 1): AUCs move by ~1e-4 with the thread
count, since float sums are split differently, and one thread per run also keeps the timings steady when
something else shares the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmark import timed
from emm.pipelines.report.nodes import best_two_values, emphasised

COPIED = ("table_1.csv", "table_1.md", "test_aucs.json", "cost_table.md", "model_costs.csv")


def run_seed(namespace: str, seed: int, threads: int) -> tuple[float, float]:
    kedro = str(Path(sys.executable).with_name("kedro"))
    command = [kedro, "run", f"--pipelines={namespace}", f"--params={namespace}.training.seed={seed}"]
    os.environ["KEDRO_ENV"] = "seeds"  # read by the pipeline registry too, which builds nodes from parameters
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    return timed(command)


def collect(namespace: str, seed: int, out: Path) -> pd.DataFrame:
    reports = Path("data/08_reporting") / namespace
    target = out / f"seed_{seed}"
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (reports / name).is_file():
            shutil.copy2(reports / name, target / name)
    table = pd.read_csv(target / "table_1.csv")
    return table.assign(seed=seed)


def spread_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) of every AUC column over seeds, per model, in Table I's order."""
    auc_columns = [column for column in per_seed if column.startswith("auc_")]
    order = list(dict.fromkeys(per_seed["model"]))
    grouped = per_seed.groupby("model", sort=False)
    table = grouped[["label", "role"]].first()
    for column in auc_columns:
        table[f"{column}_mean"] = grouped[column].mean()
        table[f"{column}_std"] = grouped[column].std(ddof=1)
    table["seeds"] = grouped["seed"].nunique()
    return table.loc[order].reset_index()


def spread_markdown(table: pd.DataFrame, seeds: list[int]) -> str:
    tasks = [column.removeprefix("auc_").removesuffix("_mean") for column in table if column.endswith("_mean")]
    best_two = {task: best_two_values(table, f"auc_{task}_mean") for task in tasks}
    lines = [
        f"Test AUC, mean ± standard deviation over seeds {', '.join(map(str, seeds))} (same split).",
        "",
        "| model | role | " + " | ".join(f"AUC {task}" for task in tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    for _, row in table.iterrows():
        cells = [row["label"], row["role"]]
        for task in tasks:
            mean, std = row[f"auc_{task}_mean"], row[f"auc_{task}_std"]
            if pd.isna(mean):
                cells.append("")
                continue
            cells.append(emphasised(f"{mean:.5f} ± {std:.5f}", mean, best_two[task], row["model"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="census")
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated model seeds")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--out", default=None, help="default: data/08_reporting/<namespace>/seeds")
    parser.add_argument("--collected", action="store_true", help="only tabulate the seed folders already in --out")
    arguments = parser.parse_args()
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    out = Path(arguments.out or f"data/08_reporting/{arguments.namespace}/seeds")
    tables, timings = [], []
    for seed in seeds:
        if arguments.collected:
            tables.append(pd.read_csv(out / f"seed_{seed}" / "table_1.csv").assign(seed=seed))
            continue
        seconds, peak = run_seed(arguments.namespace, seed, arguments.threads)
        timings.append(f"seed {seed}: {seconds:.1f} s, peak RSS {peak:.0f} MiB, {arguments.threads} thread(s)")
        print(timings[-1], flush=True)
        (out / f"seed_{seed}").mkdir(parents=True, exist_ok=True)
        (out / f"seed_{seed}" / "timing.txt").write_text(timings[-1] + "\n")
        tables.append(collect(arguments.namespace, seed, out))
    if arguments.collected:
        timings = [(out / f"seed_{seed}" / "timing.txt").read_text().strip() for seed in seeds
                   if (out / f"seed_{seed}" / "timing.txt").is_file()]
    per_seed = pd.concat(tables, ignore_index=True)
    per_seed.to_csv(out / "table_1_per_seed.csv", index=False)
    table = spread_table(per_seed)
    table.to_csv(out / "table_1_seeds.csv", index=False)
    markdown = spread_markdown(table, seeds) + "\n" + "\n".join(f"- {line}" for line in timings) + "\n"
    (out / "table_1_seeds.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()

"""The options measured on the way to EMM+ and for never married, over several model seeds (same split).

    .venv/bin/python scripts/benchmark_options.py [--seeds 42,43,44] [--threads 1]
                                                  [--out data/08_reporting/census/options] [--collected]

For each seed: `kedro run --pipelines=data_processing,train_pool,decompose,fuse --namespaces=census
--params=census.training.seed=<seed>` in the `seeds` environment (the pool, EMM and EMM+ of that seed, the
very models `make benchmark-seeds` trains for it), then `scripts/fusion_options.py` and
`scripts/pool_options.py` (for never married, then income) on them, their tables kept as
`<out>/{fusion,pool}_options*_seed_<seed>.{md,csv}`. At the end `options_spread.write_spread` writes
`<out>/fusion_options.md`, `<out>/pool_options_never_married.md` and `<out>/pool_options_income.md`: every
option's mean and spread over the seeds. ``--collected`` only
tabulates the per-seed tables already in ``--out`` (seeds run in separate checkouts: copy their files in).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark import timed
from options_spread import write_spread

SCRIPTS = Path(__file__).resolve().parent
# table -> (script, its arguments)
TABLES = {
    "fusion_options": ("fusion_options", []),
    "pool_options_never_married": ("pool_options", ["--task", "never_married"]),
    "pool_options_income": ("pool_options", ["--task", "income"]),
}


def run_seed(seed: int, out: Path) -> None:
    python = sys.executable
    kedro = str(Path(python).with_name("kedro"))
    timed([kedro, "run", "--pipelines=data_processing,train_pool,decompose,fuse", "--namespaces=census",
           f"--params=census.training.seed={seed}"])
    for table, (script, options) in TABLES.items():
        out_file = out / f"{table}_seed_{seed}.md"
        timed([python, str(SCRIPTS / f"{script}.py"), *options, "--seed", str(seed), "--out", str(out_file)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated model seeds")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/census/options"))
    parser.add_argument("--collected", action="store_true", help="only tabulate the per-seed tables in --out")
    arguments = parser.parse_args()
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    arguments.out.mkdir(parents=True, exist_ok=True)
    os.environ["KEDRO_ENV"] = "seeds"
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(arguments.threads)
    if not arguments.collected:
        for seed in seeds:
            run_seed(seed, arguments.out)
    for table in TABLES:
        per_seed = [arguments.out / f"{table}_seed_{seed}.csv" for seed in seeds]
        missing = [str(path) for path in per_seed if not path.exists()]
        if missing:
            sys.exit(f"No table of {table} for every seed: {', '.join(missing)} missing")
        print(write_spread(per_seed, arguments.out / f"{table}.md"))


if __name__ == "__main__":
    main()

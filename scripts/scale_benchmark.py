"""Scale benchmark on SYNTHETIC data: rows/s and peak memory of preprocessing and of training.

    .venv/bin/python scripts/scale_benchmark.py ali-ccp --rows 10000000      # raw Tianchi layout
    .venv/bin/python scripts/scale_benchmark.py aliexpress --rows 5000000

Three timed processes, one after the other (their resident memory sampled every second): the generator (``python -m emm.synthetic``, into
data/01_raw/synthetic/), ``kedro run --pipelines=data_processing --namespaces=<dataset>_synthetic`` (stream
the raw files, fit encoders, write the partitioned Parquet tables), and one epoch of one pool model
(``click_small``) streamed from Parquet. Writes data/08_reporting/scale_<dataset>.md. The numbers say how
fast and how big on this machine; the data is synthetic, so its AUCs say nothing about the real dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from benchmark import timed  # scripts/benchmark.py

from emm.tables import ParquetTable

NAMESPACES = {"ali-ccp": "ali_ccp_synthetic", "aliexpress": "aliexpress_synthetic"}
FOLDERS = {"ali-ccp": "data/01_raw/synthetic/ali-ccp", "aliexpress": "data/01_raw/synthetic/aliexpress"}
TRAINED_MODEL = "click_small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(NAMESPACES))
    parser.add_argument("--rows", type=int, required=True, help="training rows (raw lines) to generate")
    parser.add_argument("--test-rows", type=int, help="test rows (default: a tenth of --rows)")
    parser.add_argument("--skip-generate", action="store_true", help="reuse the files already generated")
    arguments = parser.parse_args()
    namespace, folder = NAMESPACES[arguments.dataset], FOLDERS[arguments.dataset]
    test_rows = arguments.test_rows or arguments.rows // 10
    python, kedro = sys.executable, str(Path(sys.executable).with_name("kedro"))
    rows = []
    if not arguments.skip_generate:
        seconds, peak = timed(
            [python, "-m", "emm.synthetic", arguments.dataset, "--rows", str(arguments.rows),
             "--test-rows", str(test_rows), "--out", folder]
        )  # fmt: skip
        rows.append(("generate synthetic files", arguments.rows + test_rows, seconds, peak))
    trace: list[tuple[float, float]] = []
    seconds, peak = timed([kedro, "run", "--pipelines=data_processing", f"--namespaces={namespace}"], trace)
    rows.append(("preprocess (data_processing)", arguments.rows + test_rows, seconds, peak))
    quarters = [[rss for t, rss in trace if q * seconds / 4 <= t < (q + 1) * seconds / 4] for q in range(4)]
    node = f"{namespace}.train_pool_model_{TRAINED_MODEL}"
    seconds, peak = timed(
        [kedro, "run", "--pipelines=train_pool", f"--namespaces={namespace}", f"--nodes={node}",
         f"--params={namespace}.training.max_epochs=1"]
    )  # fmt: skip
    report = json.loads(Path(f"data/08_reporting/{namespace}/pool/{TRAINED_MODEL}_training.json").read_text())
    pool_rows = len(ParquetTable(f"data/05_model_input/{namespace}/pool_train"))
    rows.append((f"train {TRAINED_MODEL}, 1 epoch (whole process)", pool_rows, seconds, peak))
    sizes = {
        path.name: sum(f.stat().st_size for f in path.glob("part-*.parquet")) / 2**20
        for path in sorted(Path(f"data/05_model_input/{namespace}").iterdir())
    }
    lines = [
        f"Synthetic {arguments.dataset}: {arguments.rows:,} training and {test_rows:,} test rows. Machine: "
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}.",
        "",
        "| step | rows | wall time (s) | rows/s | peak RSS (MiB) |",
        "|---|---|---|---|---|",
        *[
            f"| {step} | {n or ''} | {seconds:.1f} | {f'{n / seconds:,.0f}' if n else ''} | {peak:.0f} |"
            for step, n, seconds, peak in rows
        ],
        "",
        f"Training loop alone ({TRAINED_MODEL}, validation passes left out; the table streamed from Parquet when "
        f"it has more than training.max_in_memory_rows rows): "
        f"{report['train_rows_per_second']:,.0f} rows/s; the node, validation included, {report['seconds']:.1f} s.",
        "",
        "Parquet tables (MiB): " + ", ".join(f"{name} {size:.0f}" for name, size in sizes.items()),
        "",
        "Preprocessing RSS (MiB, sampled every second), largest in each quarter of its run: "
        + " / ".join(f"{max(quarter):.0f}" if quarter else "-" for quarter in quarters),
    ]
    out = Path(f"data/08_reporting/scale_{arguments.dataset}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

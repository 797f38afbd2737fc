"""Time the whole comparison, one `kedro run --pipelines=<name>` per pipeline, in order.

    .venv/bin/python scripts/benchmark.py [--pipelines census,census_3tasks,census_4tasks,adaptability]
                                          [--out data/08_reporting/benchmark.md] [--threads 2]

The default list is exactly what `kedro run` does (every dataset's chain, then Figure 3); stage names
(`data_processing,train_pool,...`) time the stages instead. Prints and writes a Markdown table: wall
seconds and peak resident memory of each pipeline's process, and the sum.

Every run uses ``--threads`` CPU threads (OMP_NUM_THREADS and MKL_NUM_THREADS; default: the machine's
cores), written into the table: AUCs move by ~1e-4 with the thread count (float sums are split differently
across threads), so two benchmarks compare only at the same count.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

COMPARISON = "census,census_3tasks,census_4tasks,adaptability"


def timed(command: list[str], rss_trace: list[tuple[float, float]] | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of ``command``; with ``rss_trace``, (seconds, RSS MiB)
    samples of the process every second are appended to it."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command)
    while True:  # wait4 rather than Popen.poll: it reaps the process with its resource usage
        pid, status, usage = os.wait4(process.pid, 0 if rss_trace is None else os.WNOHANG)
        if pid:
            break
        try:
            proc_status = Path(f"/proc/{process.pid}/status").read_text()
            rss_trace.append((time.perf_counter() - started, int(proc_status.split("VmRSS:")[1].split()[0]) / 1024))
        except (OSError, IndexError):
            pass
        time.sleep(1.0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def run_stage(stage: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of ``kedro run --pipeline=<stage>``."""
    return timed([str(Path(sys.executable).with_name("kedro")), "run", f"--pipeline={stage}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default=COMPARISON, help="comma-separated, run in this order")
    parser.add_argument("--out", default="data/08_reporting/benchmark.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of every run")
    arguments = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(arguments.threads)
    rows = []
    for stage in arguments.pipelines.split(","):
        seconds, peak = run_stage(stage)
        rows.append((stage, seconds, peak))
        print(f"{stage}: {seconds:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
    total = sum(seconds for _, seconds, _ in rows)
    peak_all = max(peak for _, _, peak in rows)
    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"{arguments.threads} CPU thread(s) per run",
        "",
        "| pipeline | wall time (s) | peak RSS (MiB) |",
        "|---|---|---|",
        *[f"| {stage} | {seconds:.1f} | {peak:.0f} |" for stage, seconds, peak in rows],
        f"| **total** | **{total:.1f}** | **{peak_all:.0f}** (largest stage) |",
    ]
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

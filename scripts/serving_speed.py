"""How fast a registered model answers as MLflow serves it: its pyfunc model loaded from the project's
registry, timed on the input example stored with it (docs/serving.md).

    .venv/bin/python scripts/serving_speed.py [--model emm_census] [--version champion] [--calls 30]
                                              [--rows 4096]

Prints the median milliseconds of a one-row request over ``--calls`` requests (after an untimed one) and the
rows/s of a ``--rows``-row request (the example's rows repeated; best of 3). What `mlflow models serve` adds
on top (HTTP, JSON) is not timed. ``--version`` is a version number or an alias.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import mlflow
import pandas as pd

def serving_speed(model_uri: str, calls: int, rows: int) -> tuple[float, float]:
    """(median ms of a one-row request, rows/s of a ``rows``-row request) of the pyfunc model at ``model_uri``."""
    model = mlflow.pyfunc.load_model(model_uri)
    example = model.input_example
    if example is None:
        raise ValueError(f"{model_uri} was logged without an input example to time it on")
    batch = pd.concat([example] * -(-rows // len(example)), ignore_index=True).head(rows)
    model.predict(example.head(1))
    single = []
    for call in range(calls):
        row = example.iloc[[call % len(example)]]
        started = time.perf_counter()
        model.predict(row)
        single.append(time.perf_counter() - started)
    passes = []
    for _ in range(3):
        started = time.perf_counter()
        model.predict(batch)
        passes.append(time.perf_counter() - started)
    return statistics.median(single) * 1e3, rows / min(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="emm_census", help="registered model name")
    parser.add_argument("--version", default="champion", help="version number or alias")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rows", type=int, default=4096)
    arguments = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # the project's own store
    separator = "/" if arguments.version.isdigit() else "@"
    uri = f"models:/{arguments.model}{separator}{arguments.version}"
    latency, throughput = serving_speed(uri, arguments.calls, arguments.rows)
    print(f"{uri}: one-row request {latency:.1f} ms (median of {arguments.calls}); {throughput:,.0f} rows/s at {arguments.rows} rows")


if __name__ == "__main__":
    main()

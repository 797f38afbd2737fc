import gzip
import os
from pathlib import Path

import pytest

for variable in ("KEDRO_DISABLE_TELEMETRY", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
    os.environ[variable] = "true"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The real data beside the checkout (and beside CI's clone): never copied into the project.
SHARED_DATA = Path(os.environ.get("EMM_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def real_census_dir() -> Path | None:
    candidates = [os.environ.get("EMM_CENSUS_DIR"), PROJECT_ROOT.parent / "shared" / "data" / "census-income"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "census-income.data.gz").is_file():
            return Path(candidate)
    return None


def head_lines(path: Path, n: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [line for _, line in zip(range(n), handle)]


@pytest.fixture(scope="session")
def census_dir() -> Path:
    found = real_census_dir()
    if found is None:
        pytest.skip("the real Census-Income files are not available (set EMM_CENSUS_DIR)")
    return found


@pytest.fixture(scope="session")
def census_slice(tmp_path_factory, census_dir) -> Path:
    """The first rows of the real train and test files, gzipped like the originals."""
    folder = tmp_path_factory.mktemp("census-slice")
    for name, rows in (("census-income.data", 4000), ("census-income.test", 3000)):
        lines = head_lines(census_dir / f"{name}.gz", rows)
        with gzip.open(folder / f"{name}.gz", "wt") as handle:
            handle.writelines(lines)
    return folder

"""Outputs written whole or not at all.

Every file a run writes goes first to a temporary name beside it (``.<name>.<pid>.<random>.tmp``, or a
``.part`` folder for a Parquet table) and replaces the old file with one ``os.replace`` once complete. A run
killed half-way leaves the previous file intact, never a truncated one that ``--only-missing-outputs``
would take for done; what it leaves behind is a temporary that names its process, and
:func:`remove_stale_temporaries` removes those whose process is gone (the project's hook does at the
start of every run).

The kedro-datasets classes the catalog uses for JSON, CSV, text, PNG and Parquet files get the same
behaviour from :class:`AtomicSave`; :class:`JSONDataset` also writes an undefined number (NaN, such as the
AUC of a task with one class in a small test set) as ``null``, never as a bare ``NaN`` no JSON parser
accepts.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset
from kedro_datasets.text import TextDataset as _TextDataset

logger = logging.getLogger(__name__)

# .<name>.<pid>.<random>.tmp (a file) or .<name>.<pid>.<random>.part[.old] (a Parquet table's folder)
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.(tmp|part|part\.old)$")


def temporary_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` writes the whole file; it then replaces ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Remove the temporaries under ``root`` left by processes that no longer run; returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for candidate in root.rglob(".*"):
        match = _TEMPORARY.match(candidate.name)
        if not match or int(match["pid"]) == os.getpid() or _process_alive(int(match["pid"])):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    if removed:
        logger.warning(
            "Removed %d half-written file(s) left by an interrupted run: %s",
            len(removed),
            ", ".join(str(path) for path in removed),
        )
    return removed


class AtomicSave:
    """Mixin for a kedro-datasets file dataset on the local filesystem: its own ``save`` writes to a
    temporary path beside ``_filepath``, which then replaces the file."""

    def save(self, data: Any) -> None:
        parent_save = super().save  # kedro wraps it with logging and error handling; we are wrapped already
        unwrapped = getattr(parent_save, "__wrapped__", None)
        final = self._filepath
        if self._protocol != "file" or isinstance(data, (list, dict)) and isinstance(self, _MatplotlibDataset):
            # Another filesystem, or several figures in a folder: the dataset's own save.
            return unwrapped(self, data) if unwrapped else parent_save(data)

        def write(temporary: Path) -> None:
            self._filepath = PurePosixPath(temporary.as_posix())
            try:
                unwrapped(self, data) if unwrapped else parent_save(data)
            finally:
                self._filepath = final

        write_atomically(Path(final), write)
        self._invalidate_cache()


def without_nan(value: Any) -> Any:
    """``value`` with every float NaN or infinity replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


class JSONDataset(AtomicSave, _JSONDataset):
    """kedro-datasets' JSONDataset, written atomically and as strict JSON (NaN as null)."""

    def save(self, data: Any) -> None:
        self._save_args = {**self._save_args, "allow_nan": False}
        super().save(without_nan(data))


class CSVDataset(AtomicSave, _CSVDataset):
    """kedro-datasets' pandas CSVDataset, written atomically."""


class TextDataset(AtomicSave, _TextDataset):
    """kedro-datasets' TextDataset, written atomically."""


class MatplotlibDataset(AtomicSave, _MatplotlibDataset):
    """kedro-datasets' MatplotlibDataset (one figure to one file), written atomically."""


class ParquetDataset(AtomicSave, _ParquetDataset):
    """kedro-datasets' pandas ParquetDataset, written atomically."""

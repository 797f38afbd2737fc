"""Models as files that load without unpickling code: ``torch.load(..., weights_only=True)``.

A file holds a payload (``kind``, a spec of plain values, tensors); the kind names the class that rebuilds
the model from it (see ``emm.models.serialization``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError
from torch import nn

from emm.datasets.atomic import write_atomically
from emm.models.mlp import SingleTaskMLP
from emm.models.serialization import from_payload


# The project's models are about 10 MB at most (Census EMM); a file a hundred times that is not one of them.
DEFAULT_MAX_BYTES = 1 << 30


class TorchModelDataset(AbstractDataset[Any, Any]):
    """Saves any object with ``to_payload()``; loads it back as the model class its payload names."""

    def __init__(self, filepath: str, max_bytes: int = DEFAULT_MAX_BYTES, metadata: dict | None = None):
        self._filepath = PurePosixPath(filepath)
        self._max_bytes = max_bytes
        self.metadata = metadata

    def _load(self) -> Any:
        path = Path(self._filepath)
        if not path.exists():
            raise DatasetError(f"Model file {path} does not exist")
        size = path.stat().st_size
        if size > self._max_bytes:  # torch.load would read all of it into memory first
            raise DatasetError(
                f"Model file {path} is {size:,} bytes, more than the {self._max_bytes:,} its catalog entry allows "
                "(max_bytes); a file that size is not one of this project's models"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError and others for foreign or corrupt files
            # from None, and torch's text left out: it advises weights_only=False, which would run the
            # file's code
            raise DatasetError(
                f"Model file {path} is not a readable model file (torch.load found no weights-only payload in "
                f"it: {type(error).__name__}); it is truncated, corrupt or not written by this project. Rerun "
                "the stage that writes it (or, for a pool model trained elsewhere, save it again with "
                "emm.datasets.torch_model.save_pool_model)"
            ) from None
        try:
            return from_payload(payload, source=str(path))
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise DatasetError(f"Model file {path} does not hold a valid model: {error}") from error

    def _save(self, model: Any) -> None:
        payload = model.to_payload()
        write_atomically(Path(self._filepath), lambda temporary: torch.save(payload, temporary))

    def _exists(self) -> bool:
        return Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "max_bytes": self._max_bytes}


def save_pool_model(path: str | os.PathLike, spec: dict, weights: nn.Module | dict) -> SingleTaskMLP:
    """Put a model trained elsewhere into a pool folder.

    ``spec`` describes its structure (see ``emm.models.mlp.pool_model_spec`` and docs/pool.md); ``weights`` is
    a torch module or a state_dict whose keys and shapes match that structure exactly.
    """
    model = SingleTaskMLP(spec)
    state_dict = weights.state_dict() if isinstance(weights, nn.Module) else weights
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"The weights do not fit the spec of model {spec.get('name', '?')!r}: {error}") from error
    payload = model.to_payload()
    write_atomically(Path(path), lambda temporary: torch.save(payload, temporary))
    return model

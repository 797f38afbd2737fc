"""The fused model as a serving pipeline reads it: loaded once, shared by every request, answering through
its inference form.

kedro-mlflow's pyfunc model deep-copies its catalog on every request (``KedroPipelineModel.predict``), and
the model with it (docs/serving.md times what that cost), and a fresh copy would need its inference form
built again. A :class:`ServedModel` is not copied (``__deepcopy__`` returns it): serving
never trains, so every request shares one model and one form.
"""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError
from torch import nn

from emm.datasets.torch_model import TorchModelDataset
from emm.models.emm import EMM
from emm.models.inference import inference_form


class ServedModel:
    """A trained model in eval mode, shared by the requests that read it (deep copies are the object
    itself); ``tasks`` are the model's."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.tasks = list(model.tasks)
        self._form: nn.Module | None = None

    def __deepcopy__(self, memo: dict) -> ServedModel:
        return self

    def answering(self, use_inference_form: bool) -> nn.Module:
        """What answers the requests: for a fused EMM with ``use_inference_form``, its inference form
        (emm.models.inference: the same logits within 1e-5), built on the first call; else the model."""
        if not use_inference_form or not isinstance(self.model, EMM):
            return self.model
        if self._form is None:
            self._form = inference_form(self.model)
        return self._form


class ServedModelDataset(TorchModelDataset):
    """A model file read as a :class:`ServedModel`. Read-only: the pipeline that trains the model writes
    the file, through the model's own catalog entry."""

    def _load(self) -> ServedModel:
        return ServedModel(super()._load())

    def _save(self, model: Any) -> None:
        raise DatasetError(
            f"{self._filepath} is read for serving only; the model is written by the pipeline that trains it"
        )

"""The one training loop every model of the project goes through: pool MLPs, EMM, baselines.

Adam over the trainable parameters, shuffled mini-batches, binary cross-entropy averaged over the model's
tasks, early stopping on the mean validation AUC with the best weights kept, and a progress bar. A model
whose objective has a term beyond the labels' cross-entropy (AITM's calibrator) defines
``extra_loss(logits) -> scalar``, which is added to it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from emm.models.tabular import StreamingTabularData, TabularData

ModelInput = TabularData | StreamingTabularData

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    max_epochs: int = 20
    patience: int = 3
    seed: int = 42
    eval_batch_size: int = 8192
    progress_bar: bool = True
    # Tables with more rows are streamed from their Parquet files (emm.models.tabular); None: always in memory.
    max_in_memory_rows: int | None = None
    shuffle_buffer_rows: int = 262144
    device: str = "auto"  # see resolve_device
    # Score the weights the model comes with before the first epoch, and keep them if no epoch beats them:
    # a model that starts trained (fine-tuning) never ends worse on validation than it started.
    validate_start: bool = False

    def __post_init__(self) -> None:
        resolve_device(self.device)  # an unusable device fails when the settings are read, before any data is

    @classmethod
    def from_params(cls, params: dict) -> TrainingConfig:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown training settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**params)


@dataclass
class TrainingHistory:
    """Per epoch: mean training loss and validation AUC per task; which epoch's weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    validation_auc: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1  # -1 with validate_start: no epoch beat the starting weights, which were kept
    start_validation_auc: dict[str, float] | None = None  # with validate_start
    seconds: float = 0.0
    train_rows_per_second: float = 0.0  # training steps only, validation left out
    device: str = ""

    @property
    def best_validation_auc(self) -> dict[str, float]:
        return self.start_validation_auc if self.best_epoch == -1 else self.validation_auc[self.best_epoch]

    def as_dict(self) -> dict:
        return {
            "train_loss": self.train_loss,
            "validation_auc": self.validation_auc,
            "best_epoch": self.best_epoch,
            "best_validation_auc": self.best_validation_auc,
            "start_validation_auc": self.start_validation_auc,
            "seconds": self.seconds,
            "train_rows_per_second": self.train_rows_per_second,
            "device": self.device,
        }


_DEVICE_SETTING = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(setting: str) -> torch.device:
    """The device of the ``training.device`` setting: ``auto`` is CUDA where available, else the CPU;
    ``cpu``, ``cuda`` and ``cuda:N`` name one, and a CUDA device that is not there is an error."""
    if not isinstance(setting, str) or not _DEVICE_SETTING.fullmatch(setting):
        raise ValueError(f"training.device is {setting!r}; expected one of auto, cpu, cuda, cuda:N")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"training.device is {setting!r} but CUDA is not available to this torch {torch.__version__}; "
                "set training.device to auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"training.device is {setting!r} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters the training loop updates (``trainable``) and those it leaves alone (``frozen``)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in model.parameters()) - trainable}


def seed_model_initialisation(seed: int) -> None:
    """Seed the global generator that ``nn.Module`` constructors draw initial weights from.

    Call it right before building a model: the first model built in a process otherwise starts from
    whatever state earlier work left the generator in, and a rerun would not reproduce it.
    """
    torch.manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, data: ModelInput, batch_size: int = 8192) -> np.ndarray:
    """Probabilities [N, n_model_tasks] in table order, the model in eval mode on the device it is on."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Each chunk goes back to the CPU at once, so device memory holds one batch's output, not the table's.
    chunks = [torch.sigmoid(model(batch.to(device))).cpu() for batch, _ in data.batches(batch_size)]
    model.train(was_training)
    return torch.cat(chunks).numpy()


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC, or NaN where the labels hold one class only (a tiny sample's rare task)."""
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, probabilities))


def auc_per_task(labels: np.ndarray, probabilities: np.ndarray, tasks: list[str]) -> dict[str, float]:
    return {task: auc(labels[:, i], probabilities[:, i]) for i, task in enumerate(tasks)}


def _selection_score(aucs: dict[str, float], name: str) -> float:
    """Mean validation AUC over the tasks where it is defined."""
    defined = [value for value in aucs.values() if not np.isnan(value)]
    if not defined:
        logger.warning("%s: no task has both classes in the validation set, epochs cannot be compared: the first is kept", name)
        return 0.0
    return float(np.mean(defined))


def _copy_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The best epoch's weights, copied so that later steps leave them alone, and to the CPU so that they
    take no device memory; ``load_state_dict`` copies them back onto the model's device."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def fit(
    model: nn.Module,
    train: ModelInput,
    validation: ModelInput,
    tasks: list[str],
    config: TrainingConfig,
    name: str = "model",
) -> TrainingHistory:
    """Train ``model``, whose outputs are logits [B, len(tasks)] for ``tasks`` in order, in place.

    The model and each batch go to the device of ``config.device``, where the model stays. Returns the
    history; the model is left with the weights of its best validation epoch.
    """
    device = resolve_device(config.device)
    model.to(device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    columns = [train.task_index(task) for task in tasks]
    validation_labels = validation.labels[:, columns].numpy()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{name}: the model has no trainable parameters")
    extra_loss = getattr(model, "extra_loss", None)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)

    history = TrainingHistory(device=str(device))
    best_score, best_state, stale_epochs = -np.inf, None, 0
    started, training_seconds, rows_seen = time.perf_counter(), 0.0, 0
    if config.validate_start:
        history.start_validation_auc = auc_per_task(
            validation_labels, predict(model, validation, config.eval_batch_size), tasks
        )
        best_score, best_state = _selection_score(history.start_validation_auc, name), _copy_to_cpu(model.state_dict())
        logger.info("%s before training: validation AUC %s", name, _rounded(history.start_validation_auc))
    n_batches = -(-len(train) // config.batch_size)
    bar = tqdm(
        total=config.max_epochs * n_batches,
        desc=name,
        unit="batch",
        disable=not config.progress_bar,
        mininterval=1.0,
        leave=True,
    )
    for epoch in range(config.max_epochs):
        model.train()
        losses = []
        epoch_started = time.perf_counter()
        for batch, labels in train.batches(config.batch_size, generator):
            if len(labels) < 2:  # BatchNorm cannot train on one row (a table's last, odd row)
                continue
            logits = model(batch.to(device))
            loss = F.binary_cross_entropy_with_logits(logits, labels[:, columns].to(device))
            if extra_loss is not None:
                loss = loss + extra_loss(logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            rows_seen += len(labels)
            bar.update()
            if len(losses) % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        training_seconds += time.perf_counter() - epoch_started
        aucs = auc_per_task(validation_labels, predict(model, validation, config.eval_batch_size), tasks)
        score = _selection_score(aucs, name)
        history.train_loss.append(float(np.mean(losses)))
        history.validation_auc.append(aucs)
        improved = score > best_score
        if improved:
            best_score, best_state, stale_epochs = score, _copy_to_cpu(model.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale_epochs += 1
        bar.set_postfix(epoch=epoch + 1, loss=f"{history.train_loss[-1]:.4f}", val_auc=f"{score:.5f}")
        logger.info(
            "%s epoch %d: loss %.5f, validation AUC %s%s",
            name,
            epoch + 1,
            history.train_loss[-1],
            _rounded(aucs),
            " (best)" if improved else "",
        )
        if stale_epochs >= config.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - started
    history.train_rows_per_second = rows_seen / training_seconds if training_seconds else 0.0
    return history


def _rounded(aucs: dict[str, float]) -> dict[str, float]:
    return {task: round(auc, 5) for task, auc in aucs.items()}

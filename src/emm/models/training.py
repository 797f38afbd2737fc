"""The one training loop every model of the project goes through: pool MLPs, EMM, baselines.

Adam over the trainable parameters, shuffled mini-batches, binary cross-entropy averaged over the model's
tasks, early stopping on the mean validation AUC with the best weights kept, and a progress bar. A model
whose objective has a term beyond the labels' cross-entropy (AITM's calibrator) defines
``extra_loss(logits) -> scalar``, which is added to it. The same loop runs on each rank of a data-parallel
run (``emm.models.distributed``, docs/distributed.md).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from emm.models.tabular import StreamingTabularData, TabularData

if TYPE_CHECKING:
    from emm.models.distributed import DistributedContext

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
    # {nproc_per_node: N}: train with torch DDP in N processes started by torchrun (docs/distributed.md);
    # None: in this process. batch_size is then each process's, and N * batch_size rows make one step.
    distributed: dict | None = None

    def __post_init__(self) -> None:
        # an unusable setting fails when the settings are read, before any data is
        resolve_device(self.device)
        _check_distributed(self.distributed)

    @classmethod
    def from_params(cls, params: dict) -> TrainingConfig:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown training settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**params)


def _check_distributed(settings: dict | None) -> None:
    if settings is None:
        return
    processes = settings.get("nproc_per_node") if isinstance(settings, dict) else None
    usable = isinstance(processes, int) and not isinstance(processes, bool) and processes >= 1
    if not usable or set(settings) != {"nproc_per_node"}:
        raise ValueError(
            f"training.distributed is {settings!r}; expected {{nproc_per_node: N}} with N >= 1 processes, "
            "or no distributed setting to train in one process"
        )


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


def predict(model: nn.Module, data: ModelInput, batch_size: int = 8192) -> np.ndarray:
    """Probabilities [N, n_model_tasks] in table order, the model in eval mode on the device it is on."""
    return torch.sigmoid(torch.from_numpy(predict_logits(model, data, batch_size))).numpy()


@torch.no_grad()
def predict_logits(model: nn.Module, data: ModelInput, batch_size: int = 8192) -> np.ndarray:
    """Logits [N, n_model_tasks] in table order, the model in eval mode on the device it is on (that of its
    first parameter, or buffer for a model without parameters: an inference form)."""
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    was_training = model.training
    model.eval()
    # Each chunk goes back to the CPU at once, so device memory holds one batch's output, not the table's.
    chunks = [model(batch.to(device)).cpu() for batch, _ in data.batches(batch_size)]
    model.train(was_training)
    return torch.cat(chunks).numpy()


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC, or NaN where the labels hold one class only (a tiny sample's rare task)."""
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, probabilities))


def _warn_about_one_class_tasks(labels: np.ndarray, tasks: list[str], where: str) -> None:
    for index, task in enumerate(tasks):
        if len(labels) and labels[:, index].min() == labels[:, index].max():
            logger.warning(
                "%s labels of task %s are all %g: its AUC is undefined (null in the reports); use more rows or a "
                "larger validation_fraction",
                where,
                task,
                labels[0, index],
            )


def auc_per_task(labels: np.ndarray, probabilities: np.ndarray, tasks: list[str]) -> dict[str, float]:
    return {task: auc(labels[:, i], probabilities[:, i]) for i, task in enumerate(tasks)}


def _selection_score(aucs: dict[str, float], name: str) -> float:
    """Mean validation AUC over the tasks where it is defined."""
    defined = [value for value in aucs.values() if not np.isnan(value)]
    if not defined:
        logger.warning("%s: no task has both classes in the validation set, epochs cannot be compared: the first is kept", name)
        return 0.0
    return float(np.mean(defined))


def _steps_per_epoch(rows: int, batch_size: int) -> int:
    """Steps an epoch over ``rows`` rows takes: one per batch, except batches of one row, skipped."""
    full_batches = rows // batch_size if batch_size >= 2 else 0
    return full_batches + (rows % batch_size >= 2)


def _copy_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The best epoch's weights, copied so that later steps leave them alone, and to the CPU so that they
    take no device memory; ``load_state_dict`` copies them back onto the model's device."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def fit(
    model: nn.Module,
    train: ModelInput,
    validation: ModelInput | None,
    tasks: list[str],
    config: TrainingConfig,
    name: str = "model",
    distributed: DistributedContext | None = None,
) -> TrainingHistory:
    """Train ``model``, whose outputs are logits [B, len(tasks)] for ``tasks`` in order, in place.

    The model and each batch go to the device of ``config.device``, where the model stays. Returns the
    history; the model is left with the weights of its best validation epoch.

    With ``distributed`` (this process's rank of a torchrun run), ``train`` is the rank's shard of the
    training rows and the model trains as a DDP replica on the rank's device. Every rank takes the same
    number of steps per epoch, that of the smallest shard: a rank stepping once more than the others would
    wait forever for their gradients. Rank 0 alone scores ``validation`` (the other ranks may pass None)
    and every rank gets its AUCs, so that all keep the same epoch's weights and stop together.
    """
    device = distributed.device if distributed else resolve_device(config.device)
    rank = distributed.rank if distributed else 0
    model.to(device)
    # Rank 0 draws as a lone process does; the other ranks' dropout masks and batch orders differ from it.
    torch.manual_seed(config.seed + rank)
    generator = torch.Generator().manual_seed(config.seed + rank)
    columns = [train.task_index(task) for task in tasks]
    scores_validation = distributed is None or distributed.is_main
    if scores_validation and validation is None:
        raise ValueError(f"{name}: no validation data to score the epochs on")
    validation_labels = validation.labels[:, columns].numpy() if scores_validation else None
    if scores_validation:
        _warn_about_one_class_tasks(validation_labels, tasks, f"{name}: validation")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{name}: the model has no trainable parameters")
    extra_loss = getattr(model, "extra_loss", None)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    stepping = distributed.wrap(model) if distributed else model  # what the training steps call
    # None: every batch of the epoch
    steps = distributed.fewest(_steps_per_epoch(len(train), config.batch_size)) if distributed else None

    history = TrainingHistory(device=str(device))
    best_score, best_state, stale_epochs = -np.inf, None, 0
    started, training_seconds, rows_seen = time.perf_counter(), 0.0, 0
    if config.validate_start:
        history.start_validation_auc = _validation_auc(model, validation, validation_labels, tasks, config, distributed)
        best_score, best_state = _selection_score(history.start_validation_auc, name), _copy_to_cpu(model.state_dict())
        logger.info("%s before training: validation AUC %s", name, _rounded(history.start_validation_auc))
    n_batches = steps if distributed else -(-len(train) // config.batch_size)
    bar = tqdm(
        total=config.max_epochs * n_batches,
        desc=name,
        unit="batch",
        disable=not config.progress_bar,
        mininterval=1.0,
        leave=True,
    )
    for epoch in range(config.max_epochs):
        stepping.train()
        losses = []
        epoch_started = time.perf_counter()
        for batch, labels in itertools.islice(train.batches(config.batch_size, generator), steps):
            if len(labels) < 2:  # BatchNorm cannot train on one row (a table's last, odd row)
                continue
            logits = stepping(batch.to(device))
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
        epoch_loss = float(np.mean(losses))
        if distributed:  # the ranks took as many steps each: the mean of their means is that of all steps
            epoch_loss = distributed.total(epoch_loss) / distributed.world_size
        aucs = _validation_auc(model, validation, validation_labels, tasks, config, distributed)
        score = _selection_score(aucs, name)
        history.train_loss.append(epoch_loss)
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
    if distributed:  # rows of every rank, over rank 0's time: the run's throughput
        rows_seen = int(distributed.total(rows_seen))
    history.seconds = time.perf_counter() - started
    history.train_rows_per_second = rows_seen / training_seconds if training_seconds else 0.0
    return history


def _validation_auc(
    model: nn.Module,
    validation: ModelInput | None,
    labels: np.ndarray | None,
    tasks: list[str],
    config: TrainingConfig,
    distributed: DistributedContext | None,
) -> dict[str, float]:
    """AUC per task on validation; ``labels`` is None on the ranks that do not score. In a distributed run
    rank 0 scores and every rank gets its numbers: each rank's BatchNorm statistics are its own, so the
    ranks' scores would differ, and with them the epoch each keeps and when each stops."""
    aucs = None if labels is None else auc_per_task(labels, predict(model, validation, config.eval_batch_size), tasks)
    return aucs if distributed is None else distributed.from_main(aucs)


def _rounded(aucs: dict[str, float]) -> dict[str, float]:
    return {task: round(auc, 5) for task, auc in aucs.items()}

"""Data-parallel training: one process (rank) per device, started by torchrun, each training a replica of
the model on its shard of the training rows, gradients averaged across ranks at every step (torch DDP).

``process_group`` joins the ranks torchrun started and gives the training loop (``emm.models.training.fit``)
a ``DistributedContext``: which rank this is, its device, and the few collective operations the loop needs
beyond DDP's gradient averaging. The backend follows the device: gloo on the CPU, nccl on CUDA.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from emm.models.training import resolve_device

# The variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that scores validation, saves the model and writes the report."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        """``model`` (already on this rank's device) as a DDP replica: rank 0's weights are broadcast when it
        is wrapped, and every backward pass averages the gradients over the ranks."""
        device_ids = [self.device] if self.device.type == "cuda" else None  # DDP on the CPU takes none
        return DistributedDataParallel(model, device_ids=device_ids)

    def fewest(self, count: int) -> int:
        """The smallest ``count`` of any rank."""
        return int(self._all_reduce(float(count), dist.ReduceOp.MIN))

    def total(self, value: float) -> float:
        """The sum of ``value`` over the ranks."""
        return self._all_reduce(value, dist.ReduceOp.SUM)

    def from_main(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank; the other ranks' ``value`` is ignored."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def _all_reduce(self, value: float, op: dist.ReduceOp) -> float:
        # float64: a sum of row counts stays exact far beyond what one run trains on
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
        return float(tensor.item())


def rank_device(setting: str, local_rank: int) -> torch.device:
    """This rank's device for the ``training.device`` setting: where it resolves to CUDA, the GPU of the
    rank's local rank (one process per GPU, as torchrun's ``--nproc-per-node`` counts them), else the CPU."""
    device = resolve_device(setting)
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(
            f"training.device is {setting!r}, one GPU, but a distributed run gives each rank the GPU of its local "
            "rank: set training.device to auto or cuda"
        )
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"The rank of local rank {local_rank} trains on GPU {local_rank}, but only {torch.cuda.device_count()} "
            "CUDA device(s) are visible: start at most one process per GPU (nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(device_setting: str) -> Iterator[DistributedContext]:
    """Join the process group of the ranks torchrun started (the environment says which rank this is), on
    gloo for the CPU or nccl for CUDA; leave it on exit."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"The environment lacks {missing}, which torchrun sets: start this with "
            "python -m torch.distributed.run (docs/distributed.md)"
        )
    device = rank_device(device_setting, int(os.environ["LOCAL_RANK"]))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives and broadcast_object_list use the current device
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield DistributedContext(dist.get_rank(), dist.get_world_size(), device, backend)
    finally:
        dist.destroy_process_group()


def parameter_checksum(model: nn.Module) -> str:
    """SHA-256 of the model's parameters, names and bytes: equal on every rank when DDP kept them in step.
    Buffers are left out, since BatchNorm's running statistics are each rank's own."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

"""AdaTT: Adaptive Task-to-Task Fusion Network (Li et al., "AdaTT: Adaptive Task-to-Task Fusion Network for
Multitask Learning in Recommendations", KDD 2023, section "Adaptive Task-to-Task Fusion Network").

At fusion level l every task t owns a group of m experts E_{t,l} (and, optionally, m_s experts are shared).
Task t's experts read its level input x_{t,l-1}; its fusion unit adds two terms:

    f_{t,l} = AllExpertGF_{t,l} + NativeExpertLF_{t,l}
    AllExpertGF_{t,l} = E_l^T G_{t,l},  G_{t,l} = softmax(W_{t,l} x_{t,l-1})   a gate over every expert of level l
    NativeExpertLF_{t,l} = E_{t,l}^T v_{t,l}                                      a learned combination of t's own

The second term is the residual that keeps each task's own experts in its output whatever the gate does; with
one expert per task v is fixed to 1 (an identity residual), as in the authors' code. x_{t,l} = f_{t,l};
x_{t,0} is the embedded x; towers read the last level.

With shared experts there is also a shared stream, as in the authors' ``AdaTTWSharedExps``: the shared experts
read it, and at every level but the last a fusion unit of the same kind (gate over all experts + residual
of the shared experts) computes its next value.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from emm.models.baselines.common import (
    COMMON_CONFIG,
    Gate,
    MultiTaskBaseline,
    check_minimums,
    expert_group,
    expert_outputs,
    tower,
    weighted_sum,
)
from emm.models.tabular import TabularBatch


class FusionUnit(nn.Module):
    """One stream's fusion at one level: gated sum of all ``n_experts`` outputs plus the native residual.

    The stream's own (native) experts are ``n_native`` consecutive experts starting at ``native_start``.
    """

    def __init__(self, input_dim: int, n_experts: int, native_start: int, n_native: int):
        super().__init__()
        self.gate = Gate(input_dim, n_experts)
        self.native = slice(native_start, native_start + n_native)
        if n_native > 1:
            scale = math.sqrt(1.0 / n_native)  # the authors' initialisation
            self.native_weights = nn.Parameter(torch.empty(n_native).uniform_(-scale, scale))  # v_{t,l}
        else:
            self.native_weights = None

    def forward(self, stream_input: torch.Tensor, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # stream_input: x_{t,l-1} [B, I]; outputs: E_l [B, E, D]
        gate = self.gate(stream_input)  # G_{t,l} [B, E]
        native = outputs[:, self.native]  # E_{t,l} [B, m, D]
        if self.native_weights is None:
            residual = native[:, 0]  # [B, D]
        else:
            residual = torch.einsum("m,bmd->bd", self.native_weights, native)  # [B, D]
        return weighted_sum(gate, outputs) + residual, gate


class LevelGates(NamedTuple):
    tasks: torch.Tensor  # [B, T, E] G_{t,l} per task, each row summing to one
    shared: torch.Tensor | None  # [B, E] the shared stream's gate; None without one at this level


class FusionLevel(nn.Module):
    """One level: T groups of m task experts, then m_s shared experts; one fusion unit per stream."""

    def __init__(self, input_dim: int, n_tasks: int, config: dict, shared_stream: bool):
        super().__init__()
        n_task_experts, n_shared_experts = config["n_task_experts"], config["n_shared_experts"]
        n_experts = n_tasks * n_task_experts + n_shared_experts
        self.task_experts = nn.ModuleList(expert_group(n_task_experts, input_dim, config) for _ in range(n_tasks))
        self.shared_experts = expert_group(n_shared_experts, input_dim, config)
        self.task_units = nn.ModuleList(
            FusionUnit(input_dim, n_experts, task * n_task_experts, n_task_experts) for task in range(n_tasks)
        )
        self.shared_unit = (
            FusionUnit(input_dim, n_experts, n_tasks * n_task_experts, n_shared_experts) if shared_stream else None
        )

    def forward(
        self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, LevelGates]:
        # task_inputs[t]: x_{t,l-1} [B, I]; shared_input: the shared stream [B, I]
        groups = [expert_outputs(experts, x) for experts, x in zip(self.task_experts, task_inputs)]  # [B, m, D]
        if len(self.shared_experts):
            groups.append(expert_outputs(self.shared_experts, shared_input))  # [B, m_s, D]
        outputs = torch.cat(groups, dim=1)  # E_l [B, E, D]
        fused, gates = zip(*(unit(x, outputs) for unit, x in zip(self.task_units, task_inputs)))
        shared_output, shared_gate = (
            self.shared_unit(shared_input, outputs) if self.shared_unit is not None else (None, None)
        )
        return list(fused), shared_output, LevelGates(torch.stack(gates, dim=1), shared_gate)


class AdaTT(MultiTaskBaseline):
    KIND = "adatt"
    DEFAULT_CONFIG = {
        **COMMON_CONFIG,
        "n_levels": 2,  # fusion levels
        "n_task_experts": 2,  # m, experts of each task at each level
        "n_shared_experts": 0,  # m_s, experts shared by all tasks at each level (0: AdaTT without them)
        "expert_dims": [32],  # widths of each expert; levels after the first read the last width
    }

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__(signature, tasks, config)
        check_minimums(
            self.KIND, self.config, {"n_levels": 1, "n_task_experts": 1, "n_shared_experts": 0, "expert_dims": 1}
        )
        n_levels, expert_dim = self.config["n_levels"], self.config["expert_dims"][-1]
        has_shared = self.config["n_shared_experts"] > 0
        self.levels = nn.ModuleList(
            FusionLevel(
                self.embedding.output_dim if depth == 0 else expert_dim,
                len(self.tasks),
                self.config,
                shared_stream=has_shared and depth < n_levels - 1,  # the last level has no next level to feed
            )
            for depth in range(n_levels)
        )
        self.towers = nn.ModuleList(tower(expert_dim, self.config) for _ in self.tasks)

    def forward_with_gates(self, batch: TabularBatch) -> tuple[torch.Tensor, list[LevelGates]]:
        """Logits [B, T] and, per level, the gates G of every stream."""
        shared = self.embedding(batch)  # [B, I]
        task_inputs = [shared] * len(self.tasks)
        gates = []
        for level in self.levels:
            task_inputs, shared, level_gates = level(task_inputs, shared)
            gates.append(level_gates)
        logits = torch.cat([task_tower(x) for task_tower, x in zip(self.towers, task_inputs)], dim=1)  # [B, T]
        return logits, gates

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        return self.forward_with_gates(batch)[0]

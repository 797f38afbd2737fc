"""PLE: Progressive Layered Extraction (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
Learning (MTL) Model for Personalized Recommendations", RecSys 2020, sections "Customized Gate Control" and
"Progressive Layered Extraction").

Each extraction level j is a Customized Gate Control (CGC) unit: task k owns m_k experts, m_s experts are
shared, and task k's gate mixes its own experts with the shared ones only:

    g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x),    w^{k,j}(z) = softmax(W_g^{k,j} z),
    S^{k,j}(x) = [E_(k,1), ..., E_(k,m_k), E_(s,1), ..., E_(s,m_s)]

where task k's experts read g^{k,j-1} and the shared experts read g^{s,j-1}, the shared stream. At every level
but the last a shared gate over *all* experts of the level, read from g^{s,j-1}, gives g^{s,j}. At level 1
every input is the embedded x. The towers read the last level: y^k(x) = t^k(g^{k,N}(x)).
"""

from __future__ import annotations

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


class ExtractionLevel(nn.Module):
    """One CGC level for ``n_tasks`` tasks; with ``shared_gate`` it also yields the shared stream g^{s,j}."""

    def __init__(self, input_dim: int, n_tasks: int, config: dict, shared_gate: bool):
        super().__init__()
        n_task_experts, n_shared_experts = config["n_task_experts"], config["n_shared_experts"]
        self.task_experts = nn.ModuleList(expert_group(n_task_experts, input_dim, config) for _ in range(n_tasks))
        self.shared_experts = expert_group(n_shared_experts, input_dim, config)
        self.task_gates = nn.ModuleList(Gate(input_dim, n_task_experts + n_shared_experts) for _ in range(n_tasks))
        self.shared_gate = Gate(input_dim, n_tasks * n_task_experts + n_shared_experts) if shared_gate else None

    def forward(
        self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        # task_inputs[k]: g^{k,j-1} [B, I]; shared_input: g^{s,j-1} [B, I]
        shared = expert_outputs(self.shared_experts, shared_input)  # [B, m_s, D]
        own = [expert_outputs(experts, z) for experts, z in zip(self.task_experts, task_inputs)]  # each [B, m_k, D]
        task_outputs = [
            weighted_sum(gate(z), torch.cat([task_own, shared], dim=1))  # w^{k,j} S^{k,j}: [B, D]
            for gate, z, task_own in zip(self.task_gates, task_inputs, own)
        ]
        if self.shared_gate is None:
            return task_outputs, None
        every_expert = torch.cat([*own, shared], dim=1)  # [B, T*m_k + m_s, D]
        return task_outputs, weighted_sum(self.shared_gate(shared_input), every_expert)  # g^{s,j} [B, D]


class PLE(MultiTaskBaseline):
    KIND = "ple"
    DEFAULT_CONFIG = {
        **COMMON_CONFIG,
        "n_levels": 2,  # N extraction levels; 1 is a single CGC
        "n_task_experts": 1,  # m_k, experts owned by each task at each level
        "n_shared_experts": 1,  # m_s, experts shared by all tasks at each level
        "expert_dims": [32],  # widths of each expert; levels after the first read the last width
    }

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__(signature, tasks, config)
        check_minimums(
            self.KIND, self.config, {"n_levels": 1, "n_task_experts": 1, "n_shared_experts": 1, "expert_dims": 1}
        )
        n_levels, expert_dim = self.config["n_levels"], self.config["expert_dims"][-1]
        self.levels = nn.ModuleList(
            ExtractionLevel(
                self.embedding.output_dim if depth == 0 else expert_dim,
                len(self.tasks),
                self.config,
                shared_gate=depth < n_levels - 1,  # the last level has no next level to feed
            )
            for depth in range(n_levels)
        )
        self.towers = nn.ModuleList(tower(expert_dim, self.config) for _ in self.tasks)

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        shared = self.embedding(batch)  # [B, I]
        task_inputs = [shared] * len(self.tasks)
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return torch.cat([task_tower(z) for task_tower, z in zip(self.towers, task_inputs)], dim=1)  # [B, T]

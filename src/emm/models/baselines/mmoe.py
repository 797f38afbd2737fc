"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018, section "Multi-gate Mixture-of-Experts").

n experts f_i are shared by all tasks; each task k mixes them with its own gate and feeds its tower h^k:

    y_k = h^k(f^k(x)),    f^k(x) = sum_i g^k(x)_i f_i(x),    g^k(x) = softmax(W_gk x)
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


class MMoE(MultiTaskBaseline):
    KIND = "mmoe"
    DEFAULT_CONFIG = {
        **COMMON_CONFIG,
        "n_experts": 4,  # n, shared by all tasks
        "expert_dims": [32],  # widths of each expert f_i
    }

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__(signature, tasks, config)
        check_minimums(self.KIND, self.config, {"n_experts": 1, "expert_dims": 1})
        input_dim = self.embedding.output_dim
        self.experts = expert_group(self.config["n_experts"], input_dim, self.config)
        self.gates = nn.ModuleList(Gate(input_dim, self.config["n_experts"]) for _ in self.tasks)
        self.towers = nn.ModuleList(tower(self.config["expert_dims"][-1], self.config) for _ in self.tasks)

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        x = self.embedding(batch)  # [B, I]
        experts = expert_outputs(self.experts, x)  # f_i(x) [B, E, D]
        logits = [
            task_tower(weighted_sum(gate(x), experts))  # h^k(f^k(x)) [B, 1]
            for gate, task_tower in zip(self.gates, self.towers)
        ]
        return torch.cat(logits, dim=1)  # [B, T]

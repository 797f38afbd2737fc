"""Shared-Bottom: hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 28, 1997).

One bottom network f is shared by all tasks and each task k has its own tower h^k on top:

    y_k = h^k(f(x))

(as written by Ma et al., KDD 2018, section "Shared-bottom Multi-task Model", who use it as a baseline).
"""

from __future__ import annotations

import torch
from torch import nn

from emm.models.baselines.common import COMMON_CONFIG, MultiTaskBaseline, check_minimums, mlp_block, tower
from emm.models.tabular import TabularBatch


class SharedBottom(MultiTaskBaseline):
    KIND = "shared_bottom"
    DEFAULT_CONFIG = {
        **COMMON_CONFIG,
        "bottom_dims": [64, 32],  # widths of the shared bottom f
    }

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__(signature, tasks, config)
        check_minimums(self.KIND, self.config, {"bottom_dims": 1})
        self.bottom = mlp_block(self.embedding.output_dim, self.config["bottom_dims"], self.config)
        self.towers = nn.ModuleList(tower(self.config["bottom_dims"][-1], self.config) for _ in self.tasks)

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        shared = self.bottom(self.embedding(batch))  # f(x) [B, D]
        return torch.cat([task_tower(shared) for task_tower in self.towers], dim=1)  # [B, T]

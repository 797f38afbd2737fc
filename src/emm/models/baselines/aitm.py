"""AITM: Adaptive Information Transfer Multi-task (Xi et al., "Modeling the Sequential Dependence among Audience
Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD 2021, sections on the
Adaptive Information Transfer module and the Behavioral Expectation Calibrator).

The tasks are steps of a conversion funnel (impression -> click -> conversion ...), in ``task_order``. Each
task t has a tower over the shared embedding, q_t = f_t(x). What task t - 1 learned is transferred to task t:

    p_{t-1} = g_{t-1}(z_{t-1})                       transfer, an MLP block of the tower width
    z_t = AIT(p_{t-1}, q_t) = sum_{u in {p_{t-1}, q_t}} w_u h_1(u),
    w_u = softmax_u(<h_2(u), h_3(u)> / sqrt(k))      k: the tower width
    z_1 = q_1,    y_t = sigmoid(Linear(z_t))

and the calibrator adds to the loss alpha * sum_{t>=2} mean_x max(y_t(x) - y_{t-1}(x), 0): a later step of the
funnel should not be predicted likelier than the one before it (see :meth:`AITM.extra_loss`).

Each step of the funnel has its own AIT (h_1, h_2, h_3); the authors' two-task code has a single one.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F

from emm.models.baselines.common import COMMON_CONFIG, MultiTaskBaseline, check_minimums, mlp_block
from emm.models.tabular import TabularBatch


class AdaptiveInformationTransfer(nn.Module):
    """AIT: attention of a task over the information transferred to it and its own tower output."""

    def __init__(self, dim: int):
        super().__init__()
        # Bias-free linear maps, as in the authors' code.
        self.value = nn.Linear(dim, dim, bias=False)  # h_1
        self.query = nn.Linear(dim, dim, bias=False)  # h_2
        self.key = nn.Linear(dim, dim, bias=False)  # h_3
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        pair = torch.stack([transferred, own], dim=1)  # u in {p_{t-1}, q_t}: [B, 2, D]
        scores = (self.query(pair) * self.key(pair)).sum(-1) * self.scale  # [B, 2]
        weights = F.softmax(scores, dim=-1)  # w_u [B, 2]
        return torch.einsum("bu,bud->bd", weights, self.value(pair))  # z_t [B, D]


class AITM(MultiTaskBaseline):
    KIND = "aitm"
    DEFAULT_CONFIG = {
        **COMMON_CONFIG,
        "tower_dims": [32, 16],  # widths of each task tower f_t; q_t, p_t and z_t have the last width
        "task_order": None,  # the funnel, earliest step first; None: the order of ``tasks``
        "calibration_weight": 0.6,  # alpha of the behavioural-expectation calibrator (the authors' 0.6)
    }

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__(signature, tasks, config)
        check_minimums(self.KIND, self.config, {"tower_dims": 1})
        order = self.config["task_order"] or self.tasks
        unknown = [task for task in order if task not in self.tasks]
        if unknown or sorted(order) != sorted(self.tasks):
            raise ValueError(
                f"AITM task_order {order} must name each of the tasks {self.tasks} exactly once"
                + (f"; unknown tasks {unknown}" if unknown else "")
            )
        self.task_order = list(order)
        # Positions in ``tasks`` (and in the output columns) of the funnel's steps, earliest first.
        self.funnel = [self.tasks.index(task) for task in self.task_order]

        width = self.config["tower_dims"][-1]
        # Towers and heads follow ``tasks``; transfers and AITs follow the funnel: step s carries
        # from task_order[s] to task_order[s + 1].
        self.towers = nn.ModuleList(
            mlp_block(self.embedding.output_dim, self.config["tower_dims"], self.config) for _ in self.tasks
        )
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in self.tasks)
        self.transfers = nn.ModuleList(mlp_block(width, [width], self.config) for _ in self.funnel[1:])
        self.information_transfers = nn.ModuleList(AdaptiveInformationTransfer(width) for _ in self.funnel[1:])

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        x = self.embedding(batch)  # [B, I]
        own = [task_tower(x) for task_tower in self.towers]  # q_t, each [B, D]
        merged: list[torch.Tensor | None] = [None] * len(self.tasks)  # z_t, each [B, D]
        merged[self.funnel[0]] = own[self.funnel[0]]  # z_1 = q_1
        for step, (earlier, later) in enumerate(pairwise(self.funnel)):
            transferred = self.transfers[step](merged[earlier])  # p_{t-1} [B, D]
            merged[later] = self.information_transfers[step](transferred, own[later])
        return torch.cat([head(z) for head, z in zip(self.heads, merged)], dim=1)  # [B, T], in ``tasks`` order

    def extra_loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The behavioural-expectation calibrator for logits [B, T] of this model, a scalar to add to the loss.

        alpha * sum over consecutive funnel steps of mean(relu(y_later - y_earlier)): zero while no later step
        is predicted likelier than the step before it.
        """
        probabilities = torch.sigmoid(logits)  # [B, T]
        excess = [
            F.relu(probabilities[:, later] - probabilities[:, earlier]).mean()
            for earlier, later in pairwise(self.funnel)
        ]
        return self.config["calibration_weight"] * sum(excess, logits.new_zeros(()))

"""The EMM model (section III-C, Algorithm 2): stacked AKF levels over frozen components, one tower per task.

    x --AKF_1--> Z_1 --AKF_2--> Z_2 ... --AKF_L--> Z_L = [z_1 .. z_T] --tower_t--> y_t

At level 1 every task's components read the batch x and the gates read a small trainable embedding of x;
at level l > 1 task t's components and gates read z_t of level l - 1.

With ``pool_heads`` each pool model also runs its own chain of components into its trained head, and task
t's logit adds a learnt mix of its models' logits:

    y_t = tower_t(z_t) + sum_m a_t,m * head_m(c_m,L(... c_m,1(x)))

Level 1 of the chains is the components' level-1 output, computed once; deeper levels are the small blocks
at the pool models' ends. Built that way from scratch, the towers start at zero and a_t,m at 1/M_t: the
model starts as the average of each task's trained models. ``EMM.with_pool_heads`` builds EMM+, the
project's improved fused model (docs/method.md), from a trained EMM.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from emm.models.akf import AKF, LevelDiagnostics
from emm.models.decomposition import Decomposition
from emm.models.tabular import FeatureEmbedding, TabularBatch
from emm.models.training import parameter_counts

KIND = "emm"

DEFAULT_CONFIG = {
    "gate_embedding_dim": 4,  # width per categorical column of the level-1 gates' own embedding
    "attention_dim": 32,  # width of MTM's queries and keys
    "tower_dims": [64],  # hidden widths of each task tower
    "use_mtm": True,  # Table II ablation switch: MTM (fusion gate + attention) on or off
    "use_trained_components": True,  # Table II ablation switch: frozen trained components, or fresh ones
    "component_adapters": False,  # a trainable linear map (identity at start) on each component's output
    "mtm_query": "own",  # MTM scores <Q(h_t), K(w)> ("own") or eq. (6) as printed, <Q(w), K(w)> ("paper")
    "pool_heads": False,  # add each pool model's own logit (its chain and trained head); towers start at 0
    "tune_components": False,  # trained components (and heads) get gradients, still in eval mode: fine-tuning
}


def _tower(input_dim: int, hidden_dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 1))


def _reset_parameters(module: nn.Module) -> None:
    for layer in module.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if isinstance(layer, nn.BatchNorm1d):
            layer.reset_running_stats()


class EMM(nn.Module):
    def __init__(self, decomposition: Decomposition, tasks: list[str], config: dict | None = None):
        super().__init__()
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        unknown = set(self.config) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"Unknown EMM settings {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
        without_models = [task for task in tasks if not decomposition.models_of(task)]
        extra = [task for task in decomposition.tasks if task not in tasks]
        if without_models or extra:
            raise ValueError(
                f"The pool does not match the tasks {tasks}: no pool model for {without_models}, "
                f"pool models for unknown tasks {extra}"
            )
        self.decomposition = decomposition
        self.tasks = list(tasks)
        self.frozen = bool(self.config["use_trained_components"])

        self.gate_embedding = FeatureEmbedding(decomposition.input_signature, self.config["gate_embedding_dim"])
        self.levels = nn.ModuleList()
        gate_dims = [self.gate_embedding.output_dim] * len(tasks)
        for depth, level_dim in enumerate(decomposition.level_dims):
            # Copies: freezing or re-initialising below must leave the decomposition as it came, since the
            # Table II variants are built from one decomposition in one process.
            components = [
                [copy.deepcopy(decomposition.levels[depth][name]) for name in decomposition.models_of(task)]
                for task in tasks
            ]
            self.levels.append(
                AKF(
                    components,
                    gate_dims,
                    level_dim,
                    self.config["attention_dim"],
                    self.config["use_mtm"],
                    self.config["component_adapters"],
                    self.config["mtm_query"],
                )
            )
            gate_dims = [level_dim] * len(tasks)
        self.towers = nn.ModuleList(_tower(decomposition.level_dims[-1], self.config["tower_dims"]) for _ in tasks)
        self.heads: nn.ModuleList | None = None
        if self.config["pool_heads"]:
            self._add_pool_heads(decomposition)

        for level in self.levels:
            for component in level.components.modules():
                if self.frozen:
                    component.requires_grad_(False)
                elif isinstance(component, nn.Sequential):
                    _reset_parameters(component)
        if self.config["tune_components"]:
            if not self.frozen:
                raise ValueError("tune_components fine-tunes trained components: it needs use_trained_components")
            for module in [*self.components(), *(self.heads or [])]:
                module.requires_grad_(True)
        self.train()

    def _add_pool_heads(self, decomposition: Decomposition) -> None:
        missing = [name for name in decomposition.models if name not in decomposition.heads]
        if missing:
            raise ValueError(
                f"pool_heads needs the pool models' trained heads, and the decomposition has none for {missing} "
                "(a components file written before heads were kept): run the decompose stage again"
            )
        if not self.frozen:
            raise ValueError("pool_heads reuses the trained components and heads: it needs use_trained_components")
        self.heads = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(decomposition.heads[name]).requires_grad_(False) for name in decomposition.models_of(task))
            for task in self.tasks
        )
        self.head_weights = nn.ParameterList(
            nn.Parameter(torch.full((len(task_heads),), 1.0 / len(task_heads))) for task_heads in self.heads
        )
        with torch.no_grad():
            for tower in self.towers:
                tower[-1].weight.zero_()
                tower[-1].bias.zero_()

    @classmethod
    def with_pool_heads(
        cls, fused: EMM, tune_components: bool = True, emm_shares: list[float] | None = None
    ) -> EMM:
        """EMM+: the trained EMM ``fused`` plus its pool models' own chains and trained heads (``pool_heads``).
        Task t starts as ``s_t * fused's logit + (1 - s_t) * the mean logit of t's pool models``, with
        ``emm_shares`` s_t (0.5 each by default); with ``tune_components`` every weight, components and heads
        included, is trainable for fine-tuning."""
        if fused.heads is not None:
            raise ValueError("This EMM has its pool heads already")
        shares = [0.5] * len(fused.tasks) if emm_shares is None else list(emm_shares)
        if len(shares) != len(fused.tasks) or not all(0 <= share <= 1 for share in shares):
            raise ValueError(f"emm_shares needs one share in [0, 1] per task {fused.tasks}, got {shares}")
        model = cls(fused.decomposition, fused.tasks, {**fused.config, "pool_heads": True, "tune_components": tune_components})
        missing, unexpected = model.load_state_dict(fused.state_dict(), strict=False)
        own = [key for key in missing if not key.startswith(("heads.", "head_weights."))]
        if own or unexpected:
            raise ValueError(f"The fused model's weights do not fit its structure: missing {own}, unexpected {unexpected}")
        with torch.no_grad():
            for tower, weights, share in zip(model.towers, model.head_weights, shares):
                tower[-1].weight.mul_(share)
                tower[-1].bias.mul_(share)
                weights.mul_(1 - share)
        return model

    def components(self) -> list[nn.Module]:
        return [component for level in self.levels for task in level.components for component in task]

    def train(self, mode: bool = True) -> EMM:
        """Trained components stay in eval mode, fine-tuned ones too: their BatchNorm statistics and dropout
        are those they were trained with."""
        super().train(mode)
        if self.frozen:
            for component in self.components():
                component.eval()
        if self.heads is not None:
            self.heads.eval()
        return self

    def forward_with_diagnostics(self, batch: TabularBatch) -> tuple[torch.Tensor, list[LevelDiagnostics]]:
        level_inputs: list = [batch] * len(self.tasks)
        gate_inputs = [self.gate_embedding(batch)] * len(self.tasks)  # each [B, G]
        diagnostics = []
        chains: list[list[torch.Tensor]] = []  # pool_heads: [t][m] each pool model's own chain, [B, D_l]
        for depth, level in enumerate(self.levels):  # Algorithm 2: Z = KF_l(Z)
            outputs = level.component_outputs(level_inputs)
            if self.heads is not None:
                chains = outputs if depth == 0 else [
                    [component(chain) for component, chain in zip(level.components[task], chains[task])]
                    for task in range(len(self.tasks))
                ]
            level_inputs, level_diagnostics = level(level_inputs, gate_inputs, outputs)
            gate_inputs = level_inputs
            diagnostics.append(level_diagnostics)
        logits = torch.cat([tower(z) for tower, z in zip(self.towers, level_inputs)], dim=1)  # [B, T]
        if self.heads is not None:
            pool_logits = [
                torch.cat([head(chain) for head, chain in zip(heads, task_chains)], dim=1) @ weights  # [B]
                for heads, task_chains, weights in zip(self.heads, chains, self.head_weights)
            ]
            logits = logits + torch.stack(pool_logits, dim=1)
        return logits, diagnostics

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        return self.forward_with_diagnostics(batch)[0]

    def parameter_counts(self) -> dict[str, int]:
        return parameter_counts(self)

    def to_payload(self) -> dict:
        return {
            "kind": KIND,
            "tasks": self.tasks,
            "config": self.config,
            "decomposition": self.decomposition.to_payload(),
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> EMM:
        model = cls(Decomposition.from_payload(payload["decomposition"]), payload["tasks"], payload["config"])
        model.load_state_dict(payload["state_dict"])
        return model

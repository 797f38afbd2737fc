"""What every multi-task baseline shares: settings, expert and tower blocks, softmax gates, payloads.

Every baseline reads a batch through its own :class:`FeatureEmbedding` and returns logits [B, T], one column
per task in the order of its ``tasks``. Its structure is fully described by ``(signature, tasks, config)``,
which is what its payload stores next to the weights, so a saved baseline is rebuilt without pickled code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from emm.models.layers import build_layer, mlp_layer_specs
from emm.models.tabular import FeatureEmbedding
from emm.models.training import parameter_counts

# The settings every baseline reads; each model's DEFAULT_CONFIG adds its own and may change these defaults.
COMMON_CONFIG = {
    "embedding_dim": 8,  # width per categorical column of the feature embedding
    "tower_dims": [16],  # hidden widths of each task tower, before its logit
    "dropout": 0.0,  # in every expert, bottom and tower block
    "batch_norm": True,  # in every expert, bottom and tower block
    "activation": "ReLU",  # a layer type of emm.models.layers.SUPPORTED_LAYERS
}


def merge_config(kind: str, defaults: dict, config: dict | None) -> dict:
    """``defaults`` overridden by ``config``; a key the model does not know is an error, never ignored."""
    config = config or {}
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown {kind} settings {unknown}; known: {sorted(defaults)}")
    # Copied so that a model editing its lists never edits the class defaults.
    return {**copy.deepcopy(defaults), **copy.deepcopy(config)}


def check_minimums(kind: str, config: dict, minimums: dict[str, int]) -> None:
    """Counts, or lengths of width lists, that must reach a minimum (e.g. at least one expert)."""
    for key, minimum in minimums.items():
        value = config[key]
        if isinstance(value, (list, tuple)) and len(value) < minimum:
            raise ValueError(f"{kind} setting {key}={value!r} must have at least {minimum} entries")
        if not isinstance(value, (list, tuple)) and value < minimum:
            raise ValueError(f"{kind} setting {key}={value!r} must be at least {minimum}")


def output_width(input_dim: int, hidden_dims: list[int]) -> int:
    return int(hidden_dims[-1]) if hidden_dims else input_dim


def mlp_block(input_dim: int, hidden_dims: list[int], config: dict) -> nn.Sequential:
    """Linear -> [BatchNorm1d] -> activation -> [Dropout] per width: an expert, a shared bottom, a tower body."""
    specs = mlp_layer_specs(input_dim, hidden_dims, config["dropout"], config["batch_norm"], config["activation"])
    return nn.Sequential(*(build_layer(spec) for spec in specs))


def expert_group(n_experts: int, input_dim: int, config: dict) -> nn.ModuleList:
    """``n_experts`` independent experts of widths ``config["expert_dims"]``, all reading the same input."""
    return nn.ModuleList(mlp_block(input_dim, config["expert_dims"], config) for _ in range(n_experts))


def tower(input_dim: int, config: dict) -> nn.Sequential:
    """A task tower: blocks of widths ``config["tower_dims"]``, then one logit."""
    hidden_dims = config["tower_dims"]
    return nn.Sequential(*mlp_block(input_dim, hidden_dims, config), nn.Linear(output_width(input_dim, hidden_dims), 1))


def expert_outputs(experts: nn.ModuleList, inputs: torch.Tensor) -> torch.Tensor:
    return torch.stack([expert(inputs) for expert in experts], dim=1)  # [B, E, D]


def weighted_sum(weights: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    # weights: [B, E]; outputs: [B, E, D]
    return torch.einsum("be,bed->bd", weights, outputs)  # [B, D]


class Gate(nn.Module):
    """softmax(W x): mixing weights over ``n_experts``, each row summing to one.

    No bias, as in the gate equations of MMoE and PLE: the weights depend on the input alone.
    """

    def __init__(self, input_dim: int, n_experts: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_experts, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.linear(inputs), dim=-1)  # [B, E]


class MultiTaskBaseline(nn.Module):
    """The common ground of the baselines: settings, the feature embedding, payloads, parameter counts.

    A subclass sets ``KIND`` and ``DEFAULT_CONFIG``, builds its layers after ``super().__init__`` on top of
    ``self.embedding`` and ``self.config``, and defines ``forward(batch) -> logits [B, len(tasks)]``.
    """

    KIND: str
    DEFAULT_CONFIG: dict

    def __init__(self, signature: dict, tasks: list[str], config: dict | None = None):
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"A {self.KIND} model needs one or more distinct task names, got {tasks}")
        self.signature = signature
        self.tasks = list(tasks)
        self.config = merge_config(self.KIND, self.DEFAULT_CONFIG, config)
        self.embedding = FeatureEmbedding(signature, self.config["embedding_dim"])

    def parameter_counts(self) -> dict[str, int]:
        # Baselines train every parameter, so "frozen" is 0; the keys are EMM's, for tables side by side.
        return parameter_counts(self)

    def to_payload(self) -> dict:
        return {
            "kind": self.KIND,
            "signature": self.signature,
            "tasks": self.tasks,
            "config": self.config,
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_payload(cls, payload: dict) -> MultiTaskBaseline:
        model = cls(payload["signature"], payload["tasks"], payload["config"])
        model.load_state_dict(payload["state_dict"])
        return model

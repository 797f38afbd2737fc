"""Single-task MLPs: the trained models a pool is made of."""

from __future__ import annotations

import torch
from torch import nn

from emm.models.layers import build_layer, check_layer_chain, mlp_layer_specs
from emm.models.tabular import FeatureEmbedding, TabularBatch

KIND = "single_task_mlp"


class SingleTaskMLP(nn.Module):
    """embedding -> body (a plain sequence of layers) -> head (one logit).

    The three parts are what decomposition relies on: the embedding joins the first component, the body is
    cut into components, and the head is dropped because the fused model trains new towers.
    """

    def __init__(self, spec: dict):
        super().__init__()
        signature = spec["input"]
        input_width = spec["embedding_dim"] * len(signature["categorical"]) + len(signature["dense"])
        check_layer_chain(spec["layers"], input_width, spec["head_in_features"], f"pool model {spec.get('name')!r}")
        self.spec = spec
        self.task = spec["task"]
        self.embedding = FeatureEmbedding(spec["input"], spec["embedding_dim"])
        self.body = nn.Sequential(*(build_layer(layer) for layer in spec["layers"]))
        self.head = nn.Linear(spec["head_in_features"], 1)

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        return self.head(self.body(self.embedding(batch)))  # [B, 1]

    def to_payload(self) -> dict:
        return {"kind": KIND, "spec": self.spec, "state_dict": self.state_dict()}

    @classmethod
    def from_payload(cls, payload: dict) -> SingleTaskMLP:
        model = cls(payload["spec"])
        model.load_state_dict(payload["state_dict"])
        return model


def pool_model_spec(
    name: str,
    task: str,
    signature: dict,
    hidden_dims: list[int],
    embedding_dim: int = 8,
    dropout: float = 0.0,
    batch_norm: bool = True,
    activation: str = "ReLU",
) -> dict:
    """The spec of a pool MLP for ``task`` over the input described by ``signature``."""
    if not hidden_dims:
        raise ValueError(f"Pool model {name!r} needs at least one hidden layer")
    input_dim = embedding_dim * len(signature["categorical"]) + len(signature["dense"])
    return {
        "kind": KIND,
        "name": name,
        "task": task,
        "input": signature,
        "embedding_dim": int(embedding_dim),
        "layers": mlp_layer_specs(input_dim, hidden_dims, dropout, batch_norm, activation),
        "head_in_features": int(hidden_dims[-1]),
    }

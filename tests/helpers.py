"""Small models and data for unit tests."""

import torch

from emm.models.mlp import SingleTaskMLP, pool_model_spec

# Baselines small enough for the end-to-end runs of the suite: the same nodes, seconds to train.
TINY_BASELINES = {
    "shared_bottom": {"bottom_dims": [16, 8], "tower_dims": [4]},
    "mmoe": {"expert_dims": [16, 8], "tower_dims": [4]},
    "ple": {"expert_dims": [16, 8], "tower_dims": [4]},
    "aitm": {"tower_dims": [16, 8]},
    "adatt": {"expert_dims": [16, 8], "tower_dims": [4]},
}

SIGNATURE = {"categorical": [["colour", 5], ["shape", 4], ["size", 3]], "dense": ["weight", "height"]}


def make_model(name: str, task: str, hidden_dims: list[int], seed: int = 0, **kwargs) -> SingleTaskMLP:
    torch.manual_seed(seed)
    return SingleTaskMLP(pool_model_spec(name, task, SIGNATURE, hidden_dims, embedding_dim=3, dropout=0.1, **kwargs))


def heterogeneous_pool() -> dict[str, SingleTaskMLP]:
    return {
        "a_small": make_model("a_small", "a", [32, 16, 8], seed=1),
        "a_large": make_model("a_large", "a", [64, 32, 16, 8], seed=2),
        "b_small": make_model("b_small", "b", [32, 16, 8], seed=3),
        "b_wide": make_model("b_wide", "b", [48, 32, 16, 8], seed=4),
    }


def warm_up_batch_norm(model, batches: int = 3) -> None:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    from emm.models.tabular import example_batch

    model.train()
    with torch.no_grad():
        for seed in range(batches):
            model(example_batch(SIGNATURE, batch_size=16, seed=seed))
    model.eval()

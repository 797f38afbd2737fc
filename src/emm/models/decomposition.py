"""Decomposition of trained models into components of equal levels: the paper's Algorithm 1.

1. Every model's body is flattened into its layers in execution order (forward hooks on a traced batch),
   each with a structural signature: type, input shape, output shape.
2. The layers whose signature all models share are found in order (the intersection l_1 ∩ ... ∩ l_N of
   section III-A), scanning the first model's layers and matching each in every other model after the
   previous match. Only layers with weights take part: an activation alone marks no cut.
3. Common layers adjacent in every model form one run (a Linear and its BatchNorm, say). Each model is cut
   after every run, past the parameter-free layers that follow it (activation, dropout), so that a
   component ends on a whole block. ``max_levels`` caps the levels; with surplus cuts, the kept ones group
   the blocks into levels of as even sizes as the cuts allow.
4. The embedding joins the first component, the head is no component (the fused model trains towers); the
   trained heads are kept beside the levels, for fused models that reuse them (``EMM``'s ``pool_heads``).
   A forward pass checks that components of one level agree in shapes and that chaining a model's
   components reproduces its body exactly.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from emm.models.layers import build_layer, layer_spec
from emm.models.mlp import SingleTaskMLP
from emm.models.tabular import FeatureEmbedding, TabularBatch, example_batch

KIND = "decomposition"


class DecompositionError(ValueError):
    """A pool that cannot be cut into components of equal levels."""


@dataclass(frozen=True)
class LayerSignature:
    """What Algorithm 1 compares: a layer's type and its input and output shapes (batch dim left out)."""

    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    has_weights: bool

    def __str__(self) -> str:
        return f"{self.type}{list(self.input_shape)}->{list(self.output_shape)}"


def trace_layers(model: SingleTaskMLP, batch: TabularBatch) -> list[tuple[nn.Module, LayerSignature]]:
    """The body's leaf layers in the order they run, each with its signature."""
    leaves = [module for module in model.body.modules() if not list(module.children())]
    traced: list[tuple[nn.Module, LayerSignature]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        traced.append(
            (
                module,
                LayerSignature(
                    type=type(module).__name__,
                    input_shape=tuple(inputs[0].shape[1:]),
                    output_shape=tuple(output.shape[1:]),
                    has_weights=any(True for _ in module.parameters(recurse=False)),
                ),
            )
        )

    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.body(model.embedding(batch))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if len(traced) != len(leaves) or len({id(module) for module, _ in traced}) != len(leaves):
        raise DecompositionError(
            f"Model {model.spec.get('name', model.task)!r}: its body does not run each layer exactly once "
            "in sequence, so it cannot be cut into components"
        )
    return traced


def find_common_layers(signatures: dict[str, list[LayerSignature]]) -> list[dict[str, int]]:
    """Weighted layers every model has, in order: one {model: layer position} per common layer."""
    names = list(signatures)
    first, others = names[0], names[1:]
    next_position = dict.fromkeys(others, 0)
    common: list[dict[str, int]] = []
    for position, signature in enumerate(signatures[first]):
        if not signature.has_weights:
            continue
        match = {first: position}
        for name in others:
            found = next(
                (
                    index
                    for index in range(next_position[name], len(signatures[name]))
                    if signatures[name][index] == signature
                ),
                None,
            )
            if found is None:
                break
            match[name] = found
        else:
            common.append(match)
            next_position.update({name: match[name] + 1 for name in others})
    return common


def plan_cuts(
    signatures: dict[str, list[LayerSignature]], common: list[dict[str, int]], max_levels: int
) -> dict[str, list[int]]:
    """Per model, the layer positions where new components start (ascending, never 0 or the end)."""
    runs: list[list[dict[str, int]]] = []
    for match in common:
        if runs and all(match[name] == runs[-1][-1][name] + 1 for name in match):
            runs[-1].append(match)
        else:
            runs.append([match])

    def cut_after(name: str, position: int) -> int:
        layers = signatures[name]
        cut = position + 1
        while cut < len(layers) and not layers[cut].has_weights:
            cut += 1
        return cut

    candidates = [{name: cut_after(name, position) for name, position in run[-1].items()} for run in runs]
    candidates = [c for c in candidates if all(cut < len(signatures[name]) for name, cut in c.items())]
    candidates = [candidates[i] for i in _spread_cuts(len(candidates), max_levels)]
    return {name: [candidate[name] for candidate in candidates] for name in signatures}


def _spread_cuts(n_candidates: int, max_levels: int) -> list[int]:
    """Which of ``n_candidates`` cuts to keep: exactly ``min(max_levels, n_candidates + 1) - 1`` of them.

    The candidates split a body into n + 1 blocks; block i ends at candidate i. The blocks are grouped into L
    levels of sizes differing by at most one: level i ends after round(i * (n + 1) / L) blocks. With
    n + 1 >= L those ends are at least one block apart, so no two kept cuts coincide and no level is lost.
    Integer arithmetic rounds halves up, the same on every platform.
    """
    n_levels = min(max_levels, n_candidates + 1)
    blocks = n_candidates + 1
    return [(2 * level * blocks + n_levels) // (2 * n_levels) - 1 for level in range(1, n_levels)]


class Decomposition:
    """The components of every pool model, grouped by level: ``levels[l][model]`` is an ``nn.Sequential``."""

    def __init__(
        self,
        models: dict[str, dict],
        levels: list[dict[str, nn.Sequential]],
        report: dict,
        heads: dict[str, nn.Linear] | None = None,
    ):
        self.models = models  # name -> {"task", "input", "embedding_dim", "level_layers": [[spec...]]}
        self.levels = levels
        self.report = report
        self.heads = heads or {}  # name -> the model's trained head, [B, D_L] -> [B, 1]; {} in older files

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(info["task"] for info in self.models.values()))

    def models_of(self, task: str) -> list[str]:
        return [name for name, info in self.models.items() if info["task"] == task]

    @property
    def level_dims(self) -> list[int]:
        """Output width of each level: [L]."""
        return [level["output_shape"][-1] for level in self.report["levels"]]

    @property
    def input_signature(self) -> dict:
        return next(iter(self.models.values()))["input"]

    def to_payload(self) -> dict:
        return {
            "kind": KIND,
            "models": self.models,
            "state_dicts": {
                name: [level[name].state_dict() for level in self.levels] for name in self.models
            },
            "report": self.report,
            "heads": {name: head.state_dict() for name, head in self.heads.items()},
        }

    @classmethod
    def from_payload(cls, payload: dict) -> Decomposition:
        levels: list[dict[str, nn.Sequential]] = []
        for name, info in payload["models"].items():
            for depth, layers in enumerate(info["level_layers"]):
                component = _component(info, depth, [build_layer(spec) for spec in layers])
                component.load_state_dict(payload["state_dicts"][name][depth])
                component.eval()  # as decompose() leaves it: a trained component is a fixed function
                if depth == len(levels):
                    levels.append({})
                levels[depth][name] = component
        heads = {}
        for name, state in payload.get("heads", {}).items():
            heads[name] = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
            heads[name].load_state_dict(state)
        return cls(payload["models"], levels, payload["report"], heads)


def _component(info: dict, depth: int, layers: list[nn.Module]) -> nn.Sequential:
    if depth == 0:
        return nn.Sequential(FeatureEmbedding(info["input"], info["embedding_dim"]), *layers)
    return nn.Sequential(*layers)


def _check_same_input(models: dict[str, SingleTaskMLP]) -> dict:
    names = list(models)
    reference = models[names[0]].spec["input"]
    differing = [name for name in names[1:] if models[name].spec["input"] != reference]
    if differing:
        details = []
        for name in differing:
            other = models[name].spec["input"]
            columns = {c for c, _ in reference["categorical"]} ^ {c for c, _ in other["categorical"]}
            columns |= set(reference["dense"]) ^ set(other["dense"])
            details.append(f"{name} (columns differing: {sorted(columns) or 'vocabulary sizes or order'})")
        raise DecompositionError(
            f"Pool models read different input schemas: {', '.join(details)} differ from {names[0]}. "
            "All models of a pool must be trained on the same feature schema."
        )
    return reference


def decompose(models: dict[str, SingleTaskMLP], max_levels: int = 3) -> Decomposition:
    """Algorithm 1: cut every model of the pool into the same number of components."""
    if len(models) < 2:
        raise DecompositionError(f"A pool needs at least two models to fuse; got {list(models)}")
    if max_levels < 1:
        raise DecompositionError(f"max_levels must be at least 1, got {max_levels}")
    signature_input = _check_same_input(models)
    batch = example_batch(signature_input)
    traced = {name: trace_layers(model, batch) for name, model in models.items()}
    signatures = {name: [signature for _, signature in layers] for name, layers in traced.items()}

    common = find_common_layers(signatures)
    if not common:
        listing = "; ".join(
            f"{name}: [{', '.join(str(s) for s in sigs if s.has_weights)}]" for name, sigs in signatures.items()
        )
        raise DecompositionError(
            "No layer with weights has the same structure in every pool model, so the models cannot be cut "
            f"into shared levels. Weighted layers per model: {listing}"
        )
    cuts = plan_cuts(signatures, common, max_levels)

    infos: dict[str, dict] = {}
    levels: list[dict[str, nn.Sequential]] = []
    for name, model in models.items():
        bounds = [0, *cuts[name], len(traced[name])]
        level_layers = [[copy.deepcopy(module) for module, _ in traced[name][a:b]] for a, b in zip(bounds, bounds[1:])]
        infos[name] = {
            "task": model.task,
            "input": model.spec["input"],
            "embedding_dim": model.spec["embedding_dim"],
            "level_layers": [[layer_spec(layer) for layer in layers] for layers in level_layers],
        }
        for depth, layers in enumerate(level_layers):
            component = _component(infos[name], depth, layers)
            if depth == 0:
                component[0].load_state_dict(model.embedding.state_dict())
            component.eval()
            if depth == len(levels):
                levels.append({})
            levels[depth][name] = component

    level_report = _check_levels(models, levels, batch)
    report = {
        "max_levels": max_levels,
        "common_layers": [str(signatures[next(iter(models))][match[next(iter(models))]]) for match in common],
        "levels": level_report,
        "models": {
            name: {
                "task": model.task,
                "cuts": cuts[name],
                "layers": [
                    {**asdict(signature), "level": int(np.searchsorted(cuts[name], position, side="right"))}
                    for position, signature in enumerate(signatures[name])
                ],
            }
            for name, model in models.items()
        },
    }
    heads = {name: copy.deepcopy(model.head) for name, model in models.items()}
    return Decomposition(infos, levels, report, heads)


def _check_levels(
    models: dict[str, SingleTaskMLP], levels: list[dict[str, nn.Sequential]], batch: TabularBatch
) -> list[dict]:
    """Shapes agree within each level, and chaining a model's components reproduces its body."""
    outputs: dict[str, torch.Tensor] = {}
    report = []
    with torch.no_grad():
        for depth, level in enumerate(levels):
            shapes = {}
            for name, component in level.items():
                outputs[name] = component(batch if depth == 0 else outputs[name])
                shapes[name] = tuple(outputs[name].shape[1:])
            if len(set(shapes.values())) > 1:
                listing = ", ".join(f"{name}: {list(shape)}" for name, shape in shapes.items())
                raise DecompositionError(
                    f"Components of level {depth + 1} disagree in output shape ({listing}); the models must end "
                    "in layers of identical structure"
                )
            report.append({"level": depth + 1, "output_shape": list(next(iter(shapes.values())))})
        for name, model in models.items():
            model.eval()
            expected = model.body(model.embedding(batch))
            if not torch.allclose(outputs[name], expected, atol=1e-6):
                raise DecompositionError(f"Model {name!r}: its chained components do not reproduce its output")
    return report

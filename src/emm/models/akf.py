"""The Adaptive Knowledge Fusion (AKF) module of section III-B: one level of the fused model.

Per task t, over the frozen components of that level (each optionally followed by a trainable adapter):
- task gate (eq. 2): h_t = sum_m G_t(x)_m * h*_t,m, a softmax over the components of task t's models;
- fusion gate (eq. 3): F_t(x) is a softmax over all tasks; the task j != t with the largest value is
  selected and its output enters scaled by that value, F_t(x)_j * h_j. The selection itself is an argmax,
  which has no gradient; the scale is the differentiable path (top-1 routing as in the Switch Transformer),
  and through the softmax it moves every logit of F_t, so the gate learns which task to pick;
- Multi-Task Merge, MTM (eqs. 4-6): z_t = sum_{w in {h_t, F_t,j h_j}} softmax_w(c(w)) V(w), where the score
  c(w) is, by the ``mtm_query`` setting,
    "own" (default, the project's reading): c(w) = <Q(h_t), K(w)> / sqrt(d), one query from the task's own
      output for both candidates, as in attention where the query comes from the position being updated;
    "paper" (eq. 6 as printed): c(w) = <Q(w), K(w)> / sqrt(d), each candidate scored from itself alone.
  V starts as the identity on every value the level's components can emit (see ``MultiTaskMerge``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


def _identity_linear(dim: int) -> nn.Linear:
    linear = nn.Linear(dim, dim)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(dim))
        linear.bias.zero_()
    return linear


class TaskGate(nn.Module):
    """Eq. (2): mixing weights over one task's components, each row summing to one."""

    def __init__(self, input_dim: int, n_components: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_components)

    def forward(self, gate_input: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.linear(gate_input), dim=-1)  # [B, n_components]


class FusionSelection(NamedTuple):
    selected: torch.Tensor  # [B, D] the chosen task's output, scaled by its gate value
    probabilities: torch.Tensor  # [B, T] F_t(x)
    choice: torch.Tensor  # [B] index of the chosen task


class FusionGate(nn.Module):
    """Eq. (3): picks, per sample, the other task most related to ``own_task``."""

    def __init__(self, input_dim: int, n_tasks: int, own_task: int):
        super().__init__()
        if n_tasks < 2:
            raise ValueError("A fusion gate needs at least two tasks to choose from")
        self.linear = nn.Linear(input_dim, n_tasks)
        self.own_task = own_task

    def forward(self, gate_input: torch.Tensor, task_outputs: torch.Tensor) -> FusionSelection:
        # gate_input: [B, G]; task_outputs: [B, T, D]
        probabilities = F.softmax(self.linear(gate_input), dim=-1)  # [B, T]
        others = probabilities.detach().clone()
        others[:, self.own_task] = -1.0
        choice = others.argmax(dim=-1)  # [B]
        weight = F.one_hot(choice, probabilities.shape[-1]).to(probabilities.dtype) * probabilities  # [B, T]
        selected = torch.einsum("bt,btd->bd", weight, task_outputs)
        return FusionSelection(selected, probabilities, choice)


class FeatureRange(NamedTuple):
    """The closed interval [low, high] of values a layer can emit; None is an open end."""

    low: float | None
    high: float | None


UNBOUNDED = FeatureRange(None, None)

# What each activation of emm.models.layers emits. GELU's and SiLU's minima (-0.169971..., -0.278465...) are
# rounded down, so that the values float32 rounding gives lie inside too.
ACTIVATION_RANGES = {
    "ReLU": FeatureRange(0.0, None),
    "LeakyReLU": UNBOUNDED,
    "GELU": FeatureRange(-0.17, None),
    "SiLU": FeatureRange(-0.279, None),
    "Tanh": FeatureRange(-1.0, 1.0),
    "Sigmoid": FeatureRange(0.0, 1.0),
}


def output_range(component: nn.Module) -> FeatureRange:
    """What ``component`` can emit, read from its last layer other than a dropout (the identity in eval mode).

    Leaf modules are taken in registration order, the order in which an ``nn.Sequential`` runs them. A last
    layer that is no activation of ``ACTIVATION_RANGES`` (a Linear, a norm, another activation) may emit any
    value, as far as this table knows.
    """
    leaves = [module for module in component.modules() if not list(module.children())]
    last = next((leaf for leaf in reversed(leaves) if not isinstance(leaf, nn.Dropout)), None)
    return ACTIVATION_RANGES.get(type(last).__name__, UNBOUNDED)


def covering_range(ranges: list[FeatureRange]) -> FeatureRange:
    """The smallest interval holding every range of ``ranges``."""
    lows, highs = [r.low for r in ranges], [r.high for r in ranges]
    return FeatureRange(
        None if None in lows else min(lows),
        None if None in highs else max(highs),
    )


class Clamp(nn.Module):
    """The projection onto [low, high]: the identity inside, the nearer end outside."""

    def __init__(self, low: float | None, high: float | None):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def _value_activation(feature_range: FeatureRange) -> nn.Module:
    """V's activation: the projection onto ``feature_range``, the identity on every value in it."""
    if feature_range == UNBOUNDED:
        return nn.Identity()
    if feature_range == ACTIVATION_RANGES["ReLU"]:
        # The same map as Clamp(0, None), but without gradient at exactly 0, where post-ReLU features often
        # are: models over ReLU pools train as they did before the value map followed the pool.
        return nn.ReLU()
    return Clamp(*feature_range)


# Where MTM's query comes from (the ``mtm_query`` setting): see the module docstring.
MTM_QUERIES = ("own", "paper")


def _check_mtm_query(query_from: str) -> None:
    if query_from not in MTM_QUERIES:
        raise ValueError(
            f"mtm_query must be one of {', '.join(map(repr, MTM_QUERIES))}; got {query_from!r}: 'own' scores "
            "<Q(h_t), K(w)>, 'paper' scores <Q(w), K(w)> (eq. 6 as printed)"
        )


class MultiTaskMerge(nn.Module):
    """Eqs. (4)-(6): attention of a task's output over itself and the selected task's output.

    The score of candidate w is <Q(h_t), K(w)> / sqrt(d) with ``query_from="own"`` and <Q(w), K(w)> / sqrt(d)
    with ``query_from="paper"``. Q and K are one fully connected layer with tanh. V is one fully connected
    layer, initialised to the identity, followed by the projection onto ``value_range``, the values the
    level's components emit: ReLU for a ReLU pool, a clamp to [-1, 1] for a tanh pool, none where the
    components may emit any value. So at the start of training V(w) = w and MTM passes the component
    features through unchanged, and V never leaves the range the frozen components of the next level were
    trained on. (The pool's own activation would not do: over a tanh pool V would start as tanh(w) != w.)
    Both candidates lie in the range when the components' outputs do: h_t is a convex combination of them,
    F_t,j h_j a shrunk h_j, and every range holds 0.
    """

    def __init__(self, dim: int, attention_dim: int, value_range: FeatureRange, query_from: str = "own"):
        super().__init__()
        _check_mtm_query(query_from)
        self.query_from = query_from
        self.query = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh())
        self.key = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh())
        self.value = nn.Sequential(_identity_linear(dim), _value_activation(value_range))
        self.scale = 1.0 / math.sqrt(attention_dim)

    def forward(self, own: torch.Tensor, selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # own: h_t [B, D]; selected: F_t,j h_j [B, D]
        pair = torch.stack([own, selected], dim=1)  # [B, 2, D] the candidates w of eq. (5)
        if self.query_from == "paper":
            query = self.query(pair)  # [B, 2, A] Q(w), one per candidate
        else:
            query = self.query(own).unsqueeze(1)  # [B, 1, A] Q(h_t), shared by both candidates
        scores = (query * self.key(pair)).sum(-1) * self.scale  # [B, 2], eq. (6)
        attention = F.softmax(scores, dim=-1)  # [B, 2] c(w)
        merged = torch.einsum("bw,bwd->bd", attention, self.value(pair))  # [B, D], eq. (5)
        return merged, attention


class LevelDiagnostics(NamedTuple):
    task_gates: list[torch.Tensor]  # per task [B, n_components]
    fusion_gates: list[torch.Tensor]  # per task [B, T]
    fusion_choices: list[torch.Tensor]  # per task [B]
    attention: list[torch.Tensor]  # per task [B, 2]: weight on own output, on the selected one


class AKF(nn.Module):
    """One level: frozen components -> task gates -> fusion gates -> MTM, for every task.

    ``components[t]`` holds the frozen components of task t's models at this level; they all map an input
    of the level's input width to ``output_dim``. With ``use_mtm=False`` (the ablation of Table II) MTM is
    left out and a task passes its gated output h_t on unchanged. With ``component_adapters`` each
    component's output passes a trainable linear map, identity at the start, before the task gate's sum:
    components of one level share shapes but not feature spaces (docs/method.md). ``mtm_query`` chooses
    MTM's score, "own" or "paper" (module docstring). MTM's V projects onto the range of values the
    components emit, read from their last activation (``output_range``).
    """

    def __init__(
        self,
        components: list[list[nn.Module]],
        gate_input_dims: list[int],
        output_dim: int,
        attention_dim: int,
        use_mtm: bool = True,
        component_adapters: bool = False,
        mtm_query: str = "own",
    ):
        super().__init__()
        _check_mtm_query(mtm_query)  # also without MTM: a misspelt setting must not pass unnoticed
        self.n_tasks = len(components)
        self.components = nn.ModuleList(nn.ModuleList(task_components) for task_components in components)
        self.adapters = (
            nn.ModuleList(
                nn.ModuleList(_identity_linear(output_dim) for _ in task_components) for task_components in components
            )
            if component_adapters
            else None
        )
        self.task_gates = nn.ModuleList(
            TaskGate(dim, len(task_components)) for dim, task_components in zip(gate_input_dims, components)
        )
        self.use_mtm = use_mtm and self.n_tasks > 1
        if self.use_mtm:
            self.fusion_gates = nn.ModuleList(
                FusionGate(dim, self.n_tasks, task) for task, dim in enumerate(gate_input_dims)
            )
            value_range = covering_range(
                [output_range(component) for task_components in components for component in task_components]
            )
            self.merges = nn.ModuleList(
                MultiTaskMerge(output_dim, attention_dim, value_range, mtm_query) for _ in range(self.n_tasks)
            )

    def component_outputs(self, level_inputs: list) -> list[list[torch.Tensor]]:
        """h*_t,m: every component's output on its task's input, [t][m] -> [B, D]."""
        return [
            [component(level_inputs[task]) for component in self.components[task]] for task in range(self.n_tasks)
        ]

    def forward(
        self,
        level_inputs: list,
        gate_inputs: list[torch.Tensor],
        component_outputs: list[list[torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], LevelDiagnostics]:
        # level_inputs[t]: what task t's components read (the raw batch at level 1, else z_t [B, D_in]);
        # gate_inputs[t]: [B, G_t]; component_outputs: this level's component_outputs(level_inputs), when the
        # caller needs them too and has computed them already
        if component_outputs is None:
            component_outputs = self.component_outputs(level_inputs)
        task_outputs, task_weights = [], []
        for task in range(self.n_tasks):
            outputs = component_outputs[task]
            if self.adapters is not None:
                outputs = [adapter(output) for adapter, output in zip(self.adapters[task], outputs)]
            outputs = torch.stack(outputs, dim=1)  # [B, M_t, D]
            weights = self.task_gates[task](gate_inputs[task])  # [B, M_t], eq. (2)
            task_outputs.append(torch.einsum("bm,bmd->bd", weights, outputs))  # h_t [B, D]
            task_weights.append(weights)
        if not self.use_mtm:
            return task_outputs, LevelDiagnostics(task_weights, [], [], [])

        stacked = torch.stack(task_outputs, dim=1)  # H [B, T, D]
        merged, probabilities, choices, attentions = [], [], [], []
        for task in range(self.n_tasks):
            selection = self.fusion_gates[task](gate_inputs[task], stacked)  # eq. (3)
            z, attention = self.merges[task](task_outputs[task], selection.selected)  # eqs. (4)-(6)
            merged.append(z)
            probabilities.append(selection.probabilities)
            choices.append(selection.choice)
            attentions.append(attention)
        return merged, LevelDiagnostics(task_weights, probabilities, choices, attentions)

"""The inference form of a fused model: the logits of ``EMM.eval()`` from fewer, larger kernels.

``inference_form(model)`` reads a trained :class:`~emm.models.emm.EMM` (frozen or fine-tuned components,
adapters on or off, MTM on or off with either query, any tasks, levels and pool shapes) and returns an
eval-only module that takes the same :class:`TabularBatch` and returns the same logits ``[B, T]``, equal to
the eager model's in eval mode up to float rounding (``tests/test_inference.py`` checks 1e-5). It copies the
weights: after more training, build it again. What it does differently, none of it a change of the function:

- eval BatchNorm is folded into the Linear before it (or after it), dropout is left out;
- level 1: every embedding of the batch (each level-1 component's own, and the gates') is folded with the
  Linear that reads it into one table, row ``v`` of column ``i`` holding ``E_i[v] @ W_i^T`` of all of them
  side by side, the biases in the first column's rows. So the first Linear of every level-1 component and
  every level-1 gate is one ``embedding_bag`` (sum) over the batch's codes plus one matmul of the dense
  columns: one gather for all embeddings, and ``n_columns`` row additions in place of
  ``n_columns * embedding_dim`` multiply-adds per output. Columns of small vocabularies share
  rows (one row per combination of their values, ``FOLD_GROUP_ROWS``), which cuts the rows gathered: 18 in
  place of 36 a sample on Census. Columns whose vocabulary would make the table larger than ``fold_bytes``
  are gathered (one gather for every embedding) and multiplied instead. The table's width is padded to a
  multiple of 16 floats (64 bytes), as are the deeper levels' first matmuls: aligned rows run faster;
- deeper levels: the first Linears of a task's components and the task's gates read the same z_t, so they
  are one matrix per task, and the tasks one batched matmul (``baddbmm``);
- the rest of each component runs with every component of the same structure (layer types and widths) on
  stacked weights (``baddbmm``), adapters included; task gates, fusion gates, MTM and towers are batched
  over tasks; MTM's two-way softmax is a sigmoid, its weighted sum a ``lerp``, its tanh 2 sigmoid(2x) - 1.

The fusion gate's choice is an argmax: with three or more tasks, a sample whose two largest fusion gate
values (other than its own task's) tie to float rounding may pick the other task than the eager model.

What it gains is bounded by the arithmetic the model needs. On the Census pool before the piecewise-linear
bins (7 dense inputs; today's figures: docs/results.md, "Inference"; 1 thread, this repo's
``python -m emm.models.inference``, allocator set by :func:`keep_freed_memory`) the form runs ~2.1x the
eager EMM's rows/s at batch 4096 (92-94k against MMoE's 78-79k) and answers one row in 0.32-0.33 ms against
MMoE's 0.66-0.69 ms. On the earlier, wider pool (``--pools wide``: first level 256 wide, ~1.2 M
multiply-adds a row even with the first Linears folded away, against MMoE's 0.47 M) it stays at about
0.37x MMoE's rows/s.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from emm.models.akf import Clamp
from emm.models.emm import EMM
from emm.models.tabular import FeatureEmbedding, TabularBatch

# ---------------------------------------------------------------------------------------------------------
# Layers as folded operations
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Affine:
    weight: torch.Tensor  # [out, in], float64 while folding
    bias: torch.Tensor  # [out]

    def signature(self) -> tuple:
        return ("affine", *self.weight.shape)


@dataclass
class _Scale:  # a BatchNorm with no Linear to fold into: x * scale + shift
    scale: torch.Tensor
    shift: torch.Tensor

    def signature(self) -> tuple:
        return ("scale", self.scale.shape[0])


@dataclass
class _Activation:
    function: Callable[[torch.Tensor], torch.Tensor]
    in_place: Callable[[torch.Tensor], torch.Tensor]  # the same, overwriting its input (a fresh tensor)
    key: tuple

    def signature(self) -> tuple:
        return ("activation", *self.key)


@dataclass
class _Module:  # anything else, run as the eval module it is (one component at a time)
    module: nn.Module

    def signature(self) -> tuple:
        return ("module", id(self.module))


def _activation(layer: nn.Module) -> _Activation | None:
    partial = functools.partial
    if isinstance(layer, nn.ReLU):
        return _Activation(torch.relu, torch.relu_, ("ReLU",))
    if isinstance(layer, nn.LeakyReLU):
        slope = layer.negative_slope
        return _Activation(
            partial(F.leaky_relu, negative_slope=slope),
            partial(F.leaky_relu_, negative_slope=slope),
            ("LeakyReLU", slope),
        )
    if isinstance(layer, nn.GELU):
        gelu = partial(F.gelu, approximate=layer.approximate)
        return _Activation(gelu, gelu, ("GELU", layer.approximate))
    if isinstance(layer, nn.SiLU):
        return _Activation(F.silu, partial(F.silu, inplace=True), ("SiLU",))
    if isinstance(layer, nn.Tanh):
        return _Activation(torch.tanh, torch.tanh_, ("Tanh",))
    if isinstance(layer, nn.Sigmoid):
        return _Activation(torch.sigmoid, torch.sigmoid_, ("Sigmoid",))
    if isinstance(layer, Clamp):
        low, high = layer.low, layer.high
        return _Activation(
            partial(torch.clamp, min=low, max=high), partial(torch.clamp_, min=low, max=high), ("Clamp", low, high)
        )
    return None


def _batch_norm(layer: nn.BatchNorm1d) -> _Scale:
    """Eval BatchNorm as a scale and shift (float64)."""
    variance, mean = layer.running_var.detach().double(), layer.running_mean.detach().double()
    scale = torch.rsqrt(variance + layer.eps)
    shift = -mean * scale
    if layer.weight is not None:
        scale = scale * layer.weight.detach().double()
        shift = shift * layer.weight.detach().double()
    if layer.bias is not None:
        shift = shift + layer.bias.detach().double()
    return _Scale(scale, shift)


def fold_layers(layers) -> list:
    """A sequence of eval layers as operations: dropout left out, eval BatchNorm folded into the Linear
    before it (or after it), Linear weights in float64 until the form is built."""
    ops: list = []
    for layer in layers:
        if isinstance(layer, nn.Dropout) or isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, nn.Linear):
            weight = layer.weight.detach().double()
            bias = layer.bias.detach().double() if layer.bias is not None else weight.new_zeros(layer.out_features)
            ops.append(_Affine(weight, bias))
        elif isinstance(layer, nn.BatchNorm1d) and layer.track_running_stats and layer.running_mean is not None:
            norm = _batch_norm(layer)
            if ops and isinstance(ops[-1], _Affine):
                previous = ops[-1]
                ops[-1] = _Affine(previous.weight * norm.scale[:, None], previous.bias * norm.scale + norm.shift)
            else:
                ops.append(norm)
        elif (activation := _activation(layer)) is not None:
            ops.append(activation)
        else:
            module = copy.deepcopy(layer).eval()
            module.requires_grad_(False)
            ops.append(_Module(module))
    folded: list = []  # a scale right before a Linear goes into that Linear
    for op in ops:
        if isinstance(op, _Affine) and folded and isinstance(folded[-1], _Scale):
            norm = folded.pop()
            op = _Affine(op.weight * norm.scale[None, :], op.weight @ norm.shift + op.bias)
        folded.append(op)
    return folded


def _identity(width: int) -> _Affine:
    return _Affine(torch.eye(width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64))


def _split_first(ops: list, width: int) -> tuple[_Affine, list]:
    """The first Linear of a component (an identity when it starts otherwise) and the rest."""
    if ops and isinstance(ops[0], _Affine):
        return ops[0], ops[1:]
    return _identity(width), ops


def _linear_activation(block: nn.Module) -> tuple[_Affine, _Activation | None]:
    """An MTM map, ``Linear [-> activation]``, as (affine, activation or None)."""
    ops = fold_layers(block if isinstance(block, nn.Sequential) else [block])
    expected = len(ops) in (1, 2) and isinstance(ops[0], _Affine)
    if not expected or not all(isinstance(op, _Activation) for op in ops[1:]):
        raise TypeError(f"Expected Linear [-> activation] in MTM, got {block}")
    return ops[0], (ops[1] if len(ops) == 2 else None)


def _identity_function(x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------------------------------------------------
# The plan of one level
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Components of one structure, run together on stacked weights."""

    members: list[tuple[int, int]]  # (task, component), in the order stacked
    columns: list[tuple[int, int]]  # each member's columns in the output of the level's first matmul
    view: str = ""  # how the input is sliced: "side_by_side" (level 1), "per_task" (deeper), "" stacked copies
    ops: list = field(default_factory=list)  # ("affine", w, b) | ("scale", s, t) | ("activation", f) | ("module", ms)
    adapter_ops: list = field(default_factory=list)  # the adapters, after the components' own ops
    gate_index: str = ""  # buffer: each member's row in the task gates' weights [N, B]
    one_per_task: bool = False  # members are tasks 0..T-1 in order: adding up is elementwise
    source: int = 0  # chain groups: the previous level's chain group (level 1: group) the members' chains are in
    rows: str = ""  # chain groups: buffer of the members' positions in that source; "" when they are all of it


@dataclass
class _LevelPlan:
    first: str  # level 1: the embedding table; deeper: the tasks' first-matmul weights [T, D, W]
    first_bias: str  # deeper: [T, 1, W]
    groups: list[_Group]
    gate_columns: list[tuple[int, int]]  # per task, its task gate's logits
    fusion_columns: list[tuple[int, int]]  # per task, its fusion gate's logits (none without MTM)
    regular: bool  # level 1: every task as many components; deeper: also the gates at the same columns
    mtm: dict | None = None
    # pool_heads, deeper levels: each pool model's component on its own chain. A chain group takes members of
    # one group of the level before, so that its input is that group's output as it is, not a stacked copy.
    chain_groups: list[_Group] = field(default_factory=list)


# Level 1 folds the first Linears into the embedding tables of the smallest vocabularies while the folded
# table stays within this size; larger vocabularies are gathered and multiplied (module docstring).
DEFAULT_FOLD_BYTES = 256 * 2**20


# Level 1 folds small-vocabulary columns together: one table row per combination of their values, holding the
# sum of their rows, so a batch row gathers one row for the group instead of one per column (the gathers
# are what the level-1 embedding_bag spends its time on). Groups stay within this many combinations.
FOLD_GROUP_ROWS = 256


def _fold_groups(sizes: dict[int, int], max_rows: int) -> list[list[int]]:
    """Columns (``sizes``: column -> vocabulary size) packed into groups of at most ``max_rows`` value
    combinations: first fit, largest vocabularies first, into the fullest group that still fits."""
    groups: list[list[int]] = []
    for column in sorted(sizes, key=lambda c: (-sizes[c], c)):
        fitting = [g for g in groups if math.prod(sizes[c] for c in g) * sizes[column] <= max_rows]
        if fitting:
            max(fitting, key=lambda g: math.prod(sizes[c] for c in g)).append(column)
        else:
            groups.append([column])
    return sorted(sorted(group) for group in groups)


def _joint_rows(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Rows of a column group: for the codes (v_1 .. v_k), row sum_j v_j * stride_j (row-major) holds
    blocks[0][v_1] + ... + blocks[k-1][v_k]; ``blocks`` are [n_j, width] each."""
    joint = blocks[0]
    for block in blocks[1:]:
        joint = (joint[:, None, :] + block[None, :, :]).flatten(0, 1)
    return joint


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(tensors).float().contiguous()


def _one_per_task(members: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """(task, component) keys split into groups of at most one per task: every task's first, its second..."""
    parts: list[list[tuple[int, int]]] = []
    seen: dict[int, int] = {}
    for task, component in members:
        occurrence = seen[task] = seen.get(task, -1) + 1
        if occurrence == len(parts):
            parts.append([])
        parts[occurrence].append((task, component))
    return parts


def _indices(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def _starts(sizes: list[int]) -> torch.Tensor:
    """Where each of consecutive blocks of ``sizes`` starts."""
    return _indices([sum(sizes[:k]) for k in range(len(sizes))])


# Up to this many rows, a batched matmul runs as one matmul per member when torch has several threads: ATen
# splits a batched matmul over its members between threads however small it is, and a batch of a few rows
# then waits on the other threads, for milliseconds where the cores are shared with other processes.
SMALL_BATCH_ROWS = 16


def _few_rows(rows: int) -> bool:
    """Whether a batch of ``rows`` rows takes the ops that stay on one thread (see SMALL_BATCH_ROWS)."""
    return rows <= SMALL_BATCH_ROWS and torch.get_num_threads() > 1


def _baddbmm(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias + x @ weight over stacked members: bias [n, 1, out], x [n, B, in], weight [n, in, out]."""
    if x.shape[0] > 1 and _few_rows(x.shape[1]):
        return torch.stack([torch.addmm(b, m, w) for b, m, w in zip(bias, x, weight)])
    if weight.shape[-1] == 1:  # one output column (heads, linear towers): ATen's batched matmul is 4x slower
        return (x * weight.transpose(1, 2)).sum(-1, keepdim=True).add_(bias)
    return torch.baddbmm(bias, x, weight)


# ATen's softmax over a last dim narrower than this many floats takes a scalar loop, slower at batch 4096
# than exp, sum and divide.
NARROW_SOFTMAX = 16


def _softmax(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Softmax over the last dim of gate logits for a batch of ``rows``. ATen's softmax splits any two rows
    between threads and is slow over a few choices (NARROW_SOFTMAX): a few rows or a few choices take
    elementwise ops instead."""
    if x.shape[-1] == 2:  # two choices: sigmoids of the differences, several times faster than ATen's softmax
        return (x - x.flip(-1)).sigmoid_()
    if x.shape[-1] < NARROW_SOFTMAX or _few_rows(rows):
        exponentials = (x - x.amax(-1, keepdim=True)).exp_()
        return exponentials.div_(exponentials.sum(-1, keepdim=True))
    return F.softmax(x, dim=-1)


class InferenceEMM(nn.Module):
    """Eval-only inference form of an :class:`EMM`; see the module's docstring."""

    def __init__(self, model: EMM, compile: bool = False, fold_bytes: int = DEFAULT_FOLD_BYTES):
        super().__init__()
        self.fold_bytes = fold_bytes
        self.tasks = list(model.tasks)
        self.n_tasks = len(self.tasks)
        self._names = 0
        signature = model.decomposition.input_signature
        self.n_categorical = len(signature["categorical"])
        self.n_dense = len(signature["dense"])
        self.pool_heads = getattr(model, "heads", None) is not None
        self.plans: list[_LevelPlan] = []
        for depth in range(len(model.levels)):
            self.plans.append(self._plan_level(model, depth))
        self.tower_ops = self._stacked_ops([fold_layers(tower) for tower in model.towers])
        if self.pool_heads:
            self._plan_heads(model)
        self.requires_grad_(False)
        super().train(False)
        self.compiled = compile
        self._forward = torch.compile(self._run, dynamic=True) if compile else self._run

    # --- building --------------------------------------------------------------------------------------

    def _buffer(self, tensor: torch.Tensor, prefix: str) -> str:
        name = f"{prefix}_{self._names}"
        self._names += 1
        self.register_buffer(name, tensor, persistent=False)
        return name

    def _stacked_ops(self, chains: list[list]) -> list:
        """The ops of chains of one structure, as ops on stacked tensors [n, B, width]."""
        ops = []
        for position, op in enumerate(chains[0]):
            members = [chain[position] for chain in chains]
            if isinstance(op, _Affine):
                weight = self._buffer(_stack([m.weight.T for m in members]), "weight")  # [n, in, out]
                bias = self._buffer(_stack([m.bias[None, :] for m in members]), "bias")  # [n, 1, out]
                ops.append(("affine", weight, bias))
            elif isinstance(op, _Scale):
                scale = self._buffer(_stack([m.scale[None, :] for m in members]), "scale")
                shift = self._buffer(_stack([m.shift[None, :] for m in members]), "shift")
                ops.append(("scale", scale, shift))
            elif isinstance(op, _Activation):
                ops.append(("activation", op.in_place))
            else:
                modules = nn.ModuleList(m.module for m in members)
                self.add_module(f"modules_{self._names}", modules)
                self._names += 1
                ops.append(("module", list(modules)))
        return ops

    def _plan_level(self, model: EMM, depth: int) -> _LevelPlan:
        level, n_tasks = model.levels[depth], self.n_tasks
        input_width = model.gate_embedding.output_dim if depth == 0 else model.decomposition.level_dims[depth - 1]
        # Per component: its first Linear (with the embedding in front at level 1) and the ops after it.
        firsts: dict[tuple[int, int], _Affine] = {}
        rests: dict[tuple[int, int], list] = {}
        adapters: dict[tuple[int, int], list] = {}
        chain_ops: dict[tuple[int, int], list] = {}  # pool_heads: each component whole, on its model's chain
        embeddings: dict[tuple[int, int], FeatureEmbedding] = {}
        for task, components in enumerate(level.components):
            for index, component in enumerate(components):
                layers = list(component)
                width = input_width
                if depth == 0:
                    embedding, layers = layers[0], layers[1:]
                    if not isinstance(embedding, FeatureEmbedding):
                        raise TypeError(f"A level-1 component must start with its FeatureEmbedding, got {embedding}")
                    embeddings[(task, index)], width = embedding, embedding.output_dim
                ops = chain_ops[(task, index)] = fold_layers(layers)
                firsts[(task, index)], rests[(task, index)] = _split_first(ops, width)
                adapters[(task, index)] = [] if level.adapters is None else fold_layers([level.adapters[task][index]])

        # Components of one structure (first Linear's width, then every op) run together. Deeper, where each
        # task's components read that task's z, a group holds one component per task, so that its input is
        # one slice of the tasks' stacked first-matmul output.
        by_structure: dict[tuple, list[tuple[int, int]]] = {}
        for key in firsts:
            structure = (firsts[key].weight.shape[0], *(op.signature() for op in rests[key] + adapters[key]))
            by_structure.setdefault(structure, []).append(key)
        grouped = list(by_structure.values())
        if depth:
            grouped = [part for members in grouped for part in _one_per_task(members)]

        gate_readers = [fold_layers([gate.linear])[0] for gate in level.task_gates]
        fusion_readers = [fold_layers([gate.linear])[0] for gate in level.fusion_gates] if level.use_mtm else []
        gate_columns, fusion_columns, groups = [], [], []
        if depth == 0:
            # One table for every reader of the batch: the components, group by group, then the gates.
            blocks: list[tuple[FeatureEmbedding, _Affine]] = []

            def place(embedding: FeatureEmbedding, reader: _Affine) -> tuple[int, int]:
                start = sum(block.weight.shape[0] for _, block in blocks)
                blocks.append((embedding, reader))
                return start, start + reader.weight.shape[0]

            for members in grouped:
                columns = [place(embeddings[key], firsts[key]) for key in members]
                groups.append(_Group(members, columns, view="side_by_side"))
            gate_columns = [place(model.gate_embedding, reader) for reader in gate_readers]
            fusion_columns = [place(model.gate_embedding, reader) for reader in fusion_readers]
            first, first_bias = self._embedding_tables(blocks), ""
            regular = len({end - start for start, end in gate_columns}) == 1
        else:
            # Per task: [its components' first Linears | task gate | fusion gate], widths padded to the widest.
            columns_of: dict[tuple[int, int], tuple[int, int]] = {}
            per_task = []
            for task in range(n_tasks):
                readers: list[_Affine] = []

                def place(reader: _Affine) -> tuple[int, int]:
                    start = sum(r.weight.shape[0] for r in readers)
                    readers.append(reader)
                    return start, start + reader.weight.shape[0]

                for members in grouped:
                    for key in members:
                        if key[0] == task:
                            columns_of[key] = place(firsts[key])
                gate_columns.append(place(gate_readers[task]))
                if fusion_readers:
                    fusion_columns.append(place(fusion_readers[task]))
                per_task.append(readers)
            width = max(sum(r.weight.shape[0] for r in readers) for readers in per_task)
            width += -width % 16
            weights, biases = [], []
            for readers in per_task:
                pad = width - sum(r.weight.shape[0] for r in readers)
                weights.append(F.pad(torch.cat([r.weight for r in readers]), (0, 0, 0, pad)).T)  # [D, W]
                biases.append(F.pad(torch.cat([r.bias for r in readers]), (0, pad))[None, :])
            first = self._buffer(_stack(weights), "first_weight")  # [T, D, W]
            first_bias = self._buffer(_stack(biases), "first_bias")  # [T, 1, W]
            for members in grouped:
                columns = [columns_of[key] for key in members]
                same = [task for task, _ in members] == list(range(n_tasks)) and len(set(columns)) == 1
                groups.append(_Group(members, columns, view="per_task" if same else ""))
            regular = len(set(gate_columns)) == 1 and len(set(fusion_columns)) <= 1

        counts = [len(components) for components in level.components]
        starts = [sum(counts[:task]) for task in range(n_tasks)]
        for group in groups:
            group.ops = self._stacked_ops([rests[key] for key in group.members])
            group.adapter_ops = self._stacked_ops([adapters[key] for key in group.members])
            group.gate_index = self._buffer(torch.tensor([starts[t] + m for t, m in group.members]), "gate_index")
            group.one_per_task = [task for task, _ in group.members] == list(range(n_tasks))
        plan = _LevelPlan(first, first_bias, groups, gate_columns, fusion_columns, regular)
        if level.use_mtm:
            plan.mtm = self._plan_mtm(level)
        if self.pool_heads and depth:
            for source, before in enumerate(self._chain_parts(depth - 1)):
                by_structure = {}
                for key in before:
                    by_structure.setdefault(tuple(op.signature() for op in chain_ops[key]), []).append(key)
                for members in by_structure.values():
                    positions = _indices([before.index(key) for key in members])
                    rows = "" if members == before else self._buffer(positions, "rows")
                    ops = self._stacked_ops([chain_ops[key] for key in members])
                    plan.chain_groups.append(_Group(members, [], ops=ops, source=source, rows=rows))
        return plan

    def _chain_parts(self, depth: int) -> list[list[tuple[int, int]]]:
        """pool_heads: how the pool models' chains are stacked after level ``depth``, members per tensor."""
        plan = self.plans[depth]
        return [group.members for group in (plan.chain_groups if depth else plan.groups)]

    def _plan_heads(self, model: EMM) -> None:
        """pool_heads: each pool model's trained head on its chain, scaled by its task's mixing weight; one
        stacked head per tensor of chains the last level leaves: (weight [n, D, 1], bias [n, 1, 1], tasks)."""
        self.head_parts = []
        for members in self._chain_parts(len(self.plans) - 1):
            weights, biases = [], []
            for task, index in members:
                affine = fold_layers([model.heads[task][index]])[0]
                share = model.head_weights[task][index].detach().double()
                weights.append(share * affine.weight.T)  # [D, 1]
                biases.append(share * affine.bias[None, :])
            tasks = _indices([task for task, _ in members])
            self.head_parts.append(
                (self._buffer(_stack(weights), "head_weight"), self._buffer(_stack(biases), "head_bias"),
                 self._buffer(tasks, "head_tasks"))
            )

    def _embedding_tables(self, blocks: list[tuple[FeatureEmbedding, _Affine]]) -> str:
        """Level 1's first Linears over the batch, ``blocks`` of (embedding, Linear reading it) side by side.

        Folded columns (the smallest vocabularies, while the table stays within ``fold_bytes``): row
        ``offset_i + v`` of one table holds every block's Linear applied to its embedding of value v of
        column i, the biases in the first folded column's rows. One ``embedding_bag`` sums them; the dense
        columns go through one matmul after it (as table rows weighted by their values, Census's 38 made the
        bag gather 38 more rows a sample and the form slower: docs/results.md, "Inference"). Columns of small vocabularies share
        rows (``FOLD_GROUP_ROWS``): a group's row for a combination of values holds the sum of its columns'
        rows, so the bag gathers one row per group. Other columns (vocabularies too large
        to fold): one gather of every embedding's rows side by side, then one matmul per embedding."""
        n_categorical, width = self.n_categorical, sum(reader.weight.shape[0] for _, reader in blocks)
        sizes = [table.num_embeddings for table in blocks[0][0].tables]
        folded, budget = [], self.fold_bytes
        for column in sorted(range(n_categorical), key=lambda i: sizes[i]):
            if sizes[column] * width * 4 > budget:
                break
            folded.append(column)
            budget -= sizes[column] * width * 4
        folded.sort()
        raw = [column for column in range(n_categorical) if column not in folded]
        groups = _fold_groups({column: sizes[column] for column in folded}, FOLD_GROUP_ROWS)
        if sum(math.prod(sizes[c] for c in group) for group in groups) * width * 4 > self.fold_bytes:
            groups = [[column] for column in folded]

        embeddings = list({id(embedding): embedding for embedding, _ in blocks}.values())
        slots = {id(e): sum(x.embedding_dim for x in embeddings[:k]) for k, e in enumerate(embeddings)}
        column_blocks, dense_blocks, biases, start, raw_readers = [], [], [], 0, {}
        for embedding, reader in blocks:
            weight, d = reader.weight, embedding.embedding_dim  # [out, n_categorical * d + n_dense]
            column_rows = {
                i: embedding.tables[i].weight.detach().double() @ weight[:, i * d : (i + 1) * d].T for i in folded
            }
            rows = [_joint_rows([column_rows[i] for i in group]) for group in groups]
            if rows:
                rows[0] = rows[0] + reader.bias
            column_blocks.append(torch.cat(rows) if rows else reader.weight.new_zeros(0, reader.weight.shape[0]))
            dense_blocks.append(weight[:, n_categorical * d :].T)  # [n_dense, out]
            biases.append(reader.bias)
            if raw:  # rows (raw column, embedding dim) of this reader's Linear, for the matmul on gathered rows
                raw_weight = torch.cat([weight[:, i * d : (i + 1) * d].T for i in raw])  # [len(raw) * d, out]
                raw_readers.setdefault(id(embedding), []).append((start, raw_weight))
            start += reader.weight.shape[0]
        table = torch.cat(column_blocks, dim=1)
        self.n_folded = len(groups)
        # Each group's joint code, sum_k code_k * stride_k, from a gather [B, n_groups, longest group]; the
        # shorter groups padded with column 0 at stride 0.
        longest = max((len(group) for group in groups), default=0)
        group_sizes = [math.prod(sizes[c] for c in group) for group in groups]
        columns = [group + [0] * (longest - len(group)) for group in groups]
        strides = [
            [math.prod(sizes[c] for c in group[k + 1 :]) for k in range(len(group))] + [0] * (longest - len(group))
            for group in groups
        ]
        for name, values in (("group_columns", columns), ("group_strides", strides)):
            tensor = torch.tensor(values, dtype=torch.int64).reshape(len(groups), longest)
            self.register_buffer(name, tensor, persistent=False)
        self.register_buffer("offsets", _starts(group_sizes), persistent=False)
        padding = (0, -table.shape[1] % 16)
        self.register_buffer("dense_weight", F.pad(torch.cat(dense_blocks, dim=1), padding).float(), persistent=False)
        # Without folded columns no table row carries the biases: the dense matmul adds them.
        self.register_buffer("first_bias", F.pad(torch.cat(biases), padding).float(), persistent=False)
        self.raw_matmuls = []
        if raw:
            raw_table = torch.cat(
                [torch.cat([e.tables[i].weight.detach() for e in embeddings], dim=1) for i in raw]
            )  # [sum of raw vocabularies, sum of embedding widths]
            self.register_buffer("raw_columns", _indices(raw), persistent=False)
            self.register_buffer("raw_offsets", _starts([sizes[i] for i in raw]), persistent=False)
            self.register_buffer("raw_table", raw_table.float().contiguous(), persistent=False)
            for embedding in embeddings:
                readers = raw_readers[id(embedding)]
                first, last = readers[0][0], readers[-1][0] + readers[-1][1].shape[1]
                weight = torch.zeros(readers[0][1].shape[0], last - first, dtype=torch.float64)
                for begin, reader_weight in readers:
                    weight[:, begin - first : begin - first + reader_weight.shape[1]] = reader_weight
                slot = slots[id(embedding)]
                name = self._buffer(weight.float().contiguous(), "raw_weight")
                self.raw_matmuls.append((slot, slot + embedding.embedding_dim, first, last, name))
        return self._buffer(F.pad(table, padding).float().contiguous(), "table")

    def _plan_mtm(self, level) -> dict:
        """Every task's MTM stacked: h_t -> [Q | K | V], the selected output -> [K | V] ("own" query) or
        [Q | K | V] ("paper"). A tanh of Q or K is computed as 2 sigmoid(2x) - 1, the Linear doubled."""
        paper = getattr(level.merges[0], "query_from", "own") == "paper"
        maps = {"query": [], "key": [], "value": []}
        for merge in level.merges:
            for name in maps:
                maps[name].append(_linear_activation(getattr(merge, name)))
        activations = {}
        for name, blocks in maps.items():
            if len({activation.key if activation else None for _, activation in blocks}) > 1:
                raise TypeError(f"The tasks' MTM {name} maps differ in their activations")
            activations[name] = blocks[0][1]
        factor, centres = 1.0, {}
        for name in ("query", "key"):
            activation = activations[name]
            if activation is not None and activation.key == ("Tanh",):  # tanh(x) = 2 sigmoid(2x) - 1
                maps[name] = [(_Affine(2 * a.weight, 2 * a.bias), None) for a, _ in maps[name]]
                activations[name], centres[name], factor = _activation(nn.Sigmoid()), 0.5, factor * 2
            else:
                centres[name] = 0.0

        def joined(names: list[str]) -> tuple[str, str]:
            weights = [torch.cat([maps[n][t][0].weight for n in names]).T for t in range(self.n_tasks)]
            biases = [torch.cat([maps[n][t][0].bias for n in names])[None, :] for t in range(self.n_tasks)]
            return self._buffer(_stack(weights), "mtm_weight"), self._buffer(_stack(biases), "mtm_bias")

        selected_maps = ["query", "key", "value"] if paper else ["key", "value"]

        def in_place(name: str):
            return activations[name].in_place if activations[name] is not None else _identity_function

        other = [1 - task for task in range(self.n_tasks)] if self.n_tasks == 2 else [0] * self.n_tasks
        return {
            "paper": paper,
            "own": joined(["query", "key", "value"]),
            "selected": joined(selected_maps),
            "attention_dim": maps["query"][0][0].weight.shape[0],
            "scale": level.merges[0].scale * factor,
            "query_activation": in_place("query"),
            "key_activation": in_place("key"),
            "value_activation": in_place("value"),
            "query_centre": centres["query"],
            "key_centre": centres["key"],
            "other": self._buffer(torch.tensor(other)[:, None, None], "other"),
            "own_mask": self._buffer(torch.eye(self.n_tasks, dtype=torch.bool)[:, None, :], "own_mask"),
        }

    # --- running ---------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> InferenceEMM:
        if mode:
            raise RuntimeError("The inference form is eval-only: train the EMM, then build its form again")
        return super().train(False)

    def forward(self, batch: TabularBatch) -> torch.Tensor:
        return self._forward(batch.categorical, batch.dense)

    def _run_ops(self, ops: list, x: torch.Tensor) -> torch.Tensor:
        """Stacked ops on x [n, B, width]; x is a fresh tensor (or a view of one), free to overwrite."""
        buffers = self._buffers
        for op in ops:
            kind = op[0]
            if kind == "affine":
                x = _baddbmm(buffers[op[2]], x, buffers[op[1]])
            elif kind == "activation":
                x = op[1](x)
            elif kind == "scale":
                x = torch.addcmul(buffers[op[2]], x, buffers[op[1]])
            else:
                x = torch.stack([module(member) for module, member in zip(op[1], x.unbind(0))])
        return x

    def _first_matmul(self, plan: _LevelPlan, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Level 1's first Linear of every component and every gate, [B, W]: one ``embedding_bag`` over
        the folded columns, one matmul of the dense ones, and a matmul per embedding for unfolded columns."""
        rows = categorical.shape[0]
        if self.n_folded:
            folded = (categorical[:, self.group_columns] * self.group_strides).sum(-1)  # [B, n_groups]
            y = F.embedding_bag(folded + self.offsets, self._buffers[plan.first], mode="sum")
            y = y.addmm_(dense, self.dense_weight)
        else:
            y = torch.addmm(self.first_bias, dense, self.dense_weight)
        if self.raw_matmuls:
            gathered = F.embedding(categorical.index_select(1, self.raw_columns) + self.raw_offsets, self.raw_table)
            for slot, slot_end, first, last, weight in self.raw_matmuls:
                y[:, first:last].addmm_(gathered[:, :, slot:slot_end].reshape(rows, -1), self._buffers[weight])
        return y

    def _run(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        buffers, n_tasks, rows = self._buffers, self.n_tasks, categorical.shape[0]
        z = dense  # the tasks' outputs [T, B, D] of the level before (level 1 reads the batch instead)
        chains: list | None = [] if self.pool_heads else None  # pool_heads: the chains, [n, B, D] per part
        for depth, plan in enumerate(self.plans):
            if depth == 0:
                y = self._first_matmul(plan, categorical, dense)  # [B, W]
            else:
                y = _baddbmm(buffers[plan.first_bias], z, buffers[plan.first])  # [T, B, W]

            def columns_of(task: int, columns: tuple[int, int]) -> torch.Tensor:
                return y[:, columns[0] : columns[1]] if depth == 0 else y[task, :, columns[0] : columns[1]]

            # Task gates (eq. 2), each task's weights over its components: rows of [N, B].
            if plan.regular and depth == 0:  # the tasks' gates side by side
                start, end = plan.gate_columns[0][0], plan.gate_columns[-1][1]
                gates = _softmax(y[:, start:end].unflatten(1, (n_tasks, -1)), rows).flatten(1).T
            elif plan.regular:  # every task's gate at the same columns
                start, end = plan.gate_columns[0]
                gates = _softmax(y[:, :, start:end], rows).transpose(1, 2).flatten(0, 1)
            else:
                gates = torch.cat([_softmax(columns_of(t, c), rows).T for t, c in enumerate(plan.gate_columns)])

            # The components, group by group, and h_t = sum_m g_t,m * output_t,m.
            h, started = None, set()  # started: the tasks whose h holds a first term
            for group in plan.groups:
                if group.view == "side_by_side":
                    x = y[:, group.columns[0][0] : group.columns[-1][1]].unflatten(1, (len(group.members), -1))
                    x = x.transpose(0, 1)
                elif group.view == "per_task":
                    x = y[:, :, group.columns[0][0] : group.columns[0][1]]
                else:
                    x = torch.stack([columns_of(t, c) for (t, _), c in zip(group.members, group.columns)])
                x = self._run_ops(group.ops, x)  # [n, B, D]
                if chains is not None and depth == 0:  # the pool models' own chains start as the components'
                    chains.append(x)
                x = self._run_ops(group.adapter_ops, x)
                weights = gates.index_select(0, buffers[group.gate_index]).unsqueeze(-1)  # [n, B, 1]
                if group.one_per_task and (h is None or len(started) == n_tasks):
                    h = x * weights if h is None else h.addcmul_(x, weights)
                    started.update(range(n_tasks))
                    continue
                if h is None:
                    h = x.new_empty(n_tasks, *x.shape[1:])
                for member, (task, _) in enumerate(group.members):  # one pass each, no weighted copy
                    if task in started:
                        h[task].addcmul_(x[member], weights[member])
                    else:
                        torch.mul(x[member], weights[member], out=h[task])
                        started.add(task)
            z = h if plan.mtm is None else self._merge(plan, y, h, columns_of)
            if chains is not None and depth:
                chains = self._chains(plan, chains)
        logits = self._run_ops(self.tower_ops, z)  # [T, B, 1]
        if chains is not None:  # + sum_m a_t,m head_m(chain_m)
            for (weight, bias, tasks), chain in zip(self.head_parts, chains):
                logits = logits.index_add_(0, buffers[tasks], _baddbmm(buffers[bias], chain, buffers[weight]))
        return logits.squeeze(-1).T.contiguous()

    def _chains(self, plan: _LevelPlan, chains: list) -> list:
        """pool_heads: each pool model's chain through this level's component of it."""
        advanced = []
        for group in plan.chain_groups:
            x = chains[group.source]
            if group.rows:
                x = x.index_select(0, self._buffers[group.rows])
            advanced.append(self._run_ops(group.ops, x))
        return advanced

    def _merge(self, plan: _LevelPlan, y: torch.Tensor, h: torch.Tensor, columns_of) -> torch.Tensor:
        """Fusion gates (eq. 3) and MTM (eqs. 4-6) of every task: z [T, B, D]."""
        buffers, mtm, n_tasks, rows = self._buffers, plan.mtm, self.n_tasks, h.shape[1]
        if plan.regular and y.dim() == 2:
            start, end = plan.fusion_columns[0][0], plan.fusion_columns[-1][1]
            logits = y[:, start:end].unflatten(1, (n_tasks, n_tasks)).transpose(0, 1)  # [T, B, T]
        elif plan.regular:
            logits = y[:, :, plan.fusion_columns[0][0] : plan.fusion_columns[0][1]]
        else:
            logits = torch.stack([columns_of(t, c) for t, c in enumerate(plan.fusion_columns)])
        probabilities = _softmax(logits, rows)
        if n_tasks == 2:  # the other task is the only choice
            weight = probabilities.gather(-1, buffers[mtm["other"]].expand(-1, rows, -1))  # [T, B, 1]
            selected = h.flip(0) * weight
        else:
            choice = probabilities.masked_fill(buffers[mtm["own_mask"]], -1.0).argmax(-1)  # [T, B]
            weight = probabilities.gather(-1, choice.unsqueeze(-1))
            selected = h[choice, torch.arange(rows, device=h.device)] * weight
        a = mtm["attention_dim"]
        own = _baddbmm(buffers[mtm["own"][1]], h, buffers[mtm["own"][0]])  # [T, B, 2A + D]: Q, K, V of h_t
        other = _baddbmm(buffers[mtm["selected"][1]], selected, buffers[mtm["selected"][0]])  # [Q,] K, V
        if mtm["paper"]:  # <Q(w), K(w)> for w = h_t and w = the selected output
            scores = []
            for out in (own, other):
                query, key = self._query_key(mtm, out)
                scores.append((query - mtm["query_centre"]).mul_(key - mtm["key_centre"]).sum(-1, keepdim=True))
            score = scores[0] - scores[1]
            values = 2 * a
        else:  # <Q(h_t), K(h_t)> - <Q(h_t), K(selected)>, in which the key's centre cancels
            query, key = self._query_key(mtm, own)
            keys = key - mtm["key_activation"](other[..., :a])
            score = (query - mtm["query_centre"]).mul_(keys).sum(-1, keepdim=True)
            values = a
        attention = torch.sigmoid(score * mtm["scale"])  # [T, B, 1], the softmax over (own, selected), own's share
        value_activation = mtm["value_activation"]
        return torch.lerp(value_activation(other[..., values:]), value_activation(own[..., 2 * a :]), attention)


    @staticmethod
    def _query_key(mtm: dict, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q and K from the pre-activations [..., Q | K | ...], one op when they share their activation."""
        a = mtm["attention_dim"]
        if mtm["query_activation"] is mtm["key_activation"]:
            both = mtm["query_activation"](out[..., : 2 * a])
            return both[..., :a], both[..., a:]
        return mtm["query_activation"](out[..., :a]), mtm["key_activation"](out[..., a : 2 * a])


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 256 * 2**20) -> bool:
    """Have glibc's malloc keep freed buffers for reuse rather than hand them back to the OS (process-wide).

    PyTorch's CPU tensors come from malloc. By default glibc serves large allocations with fresh pages from
    mmap and unmaps them when they are freed (its threshold adapts to the process's history), so a model
    whose forward pass allocates tens of MiB of temporaries, like the inference form at batch 4096, pays page
    faults for them on every call, and how many depends on what the process allocated before: on Census the
    form's rows/s varied between 64k and 92k from one process to the next. Allocations up to
    ``mmap_threshold`` (glibc's ceiling is 32 MiB) then come from the heap, which keeps up to
    ``trim_threshold`` of free memory. Returns False, changing nothing, where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):
        return False


def inference_form(model: EMM, compile: bool = False, fold_bytes: int = DEFAULT_FOLD_BYTES) -> InferenceEMM:
    """The eval-only inference form of ``model`` (module docstring). ``compile`` runs its forward through
    ``torch.compile`` (dynamic shapes; the first calls compile). ``fold_bytes`` bounds the level-1 table
    into which embeddings and first Linears are folded. The form is on the device ``model`` is on; the
    folding itself runs on a CPU copy (in float64, which not every accelerator supports)."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        return InferenceEMM(model, compile=compile, fold_bytes=fold_bytes)
    return InferenceEMM(copy.deepcopy(model).cpu(), compile=compile, fold_bytes=fold_bytes).to(device)


# ---------------------------------------------------------------------------------------------------------
# python -m emm.models.inference: eager MMoE, eager EMM and the inference form, timed in one process
# ---------------------------------------------------------------------------------------------------------


def _pool_shapes(income_dims: list[tuple[int, ...]], never_married_dims: list[tuple[int, ...]]):
    """(task index, hidden dims) of each pool model: the first task's models, then the second's."""
    return tuple((0, dims) for dims in income_dims) + tuple((1, dims) for dims in never_married_dims)


SMALL, LARGE = (128, 64), (256, 128, 64)
CENSUS_POOL = _pool_shapes([SMALL, LARGE], [SMALL, SMALL, LARGE])  # conf/base/parameters_census.yml


def _census_like(pool_shapes=CENSUS_POOL, adapters: bool = False):
    """Random models of Census size: a pool of ``pool_shapes`` ((task index, hidden dims) per model), the census
    fusion and MMoE settings, the census vocabularies (data/04_feature/census/feature_schema.json, else 36
    columns of 3 to 206 values, 38 dense: 7 columns and 31 piecewise-linear bins)."""
    import json
    from pathlib import Path

    from emm.models.baselines.mmoe import MMoE
    from emm.models.decomposition import decompose
    from emm.models.mlp import SingleTaskMLP, pool_model_spec
    from emm.models.tabular import example_batch, input_signature

    schema_path = Path("data/04_feature/census/feature_schema.json")
    if schema_path.exists():
        signature = input_signature(json.loads(schema_path.read_text()))
    else:
        generator = torch.Generator().manual_seed(0)
        sizes = torch.randint(3, 207, (36,), generator=generator).tolist()
        signature = {
            "categorical": [[f"c{i}", size] for i, size in enumerate(sizes)],
            "dense": [f"d{i}" for i in range(38)],
        }
    tasks = [f"task_{t}" for t in range(1 + max(task for task, _ in pool_shapes))]
    pool = {}
    for index, (task, dims) in enumerate(pool_shapes):
        torch.manual_seed(index)
        name = f"{tasks[task]}_{index}"
        pool[name] = SingleTaskMLP(pool_model_spec(name, tasks[task], signature, list(dims), 8, 0.1))
    emm = EMM(
        decompose(pool, max_levels=3),
        tasks,
        {"gate_embedding_dim": 4, "attention_dim": 32, "tower_dims": [], "component_adapters": adapters},
    )
    mmoe = MMoE(signature, tasks, {"n_experts": 4, "expert_dims": [256, 128, 64], "tower_dims": [32], "dropout": 0.1})
    for model in (*pool.values(), emm, mmoe):  # BatchNorm statistics of a trained model
        model.train()
        with torch.no_grad():
            for seed in range(3):
                model(example_batch(signature, 256, seed))
        model.eval()
    return signature, emm, mmoe


def multiply_adds_per_row(model: nn.Module, batch: TabularBatch) -> int:
    """Multiply-adds of every Linear a forward pass runs, per row."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += inputs[0].numel() // module.in_features * module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return total // batch.categorical.shape[0]


# The pools ``python -m emm.models.inference`` times: (title, pool and fusion settings).
BENCHMARK_POOLS = {
    "census": ("Census: 3 x [128,64] + 2 x [256,128,64], no adapters", {}),
    "four": (
        "the four-model Census pool (before the fifth): 2 x [128,64] + 2 x [256,128,64], adapters",
        {"pool_shapes": _pool_shapes([SMALL, LARGE], [SMALL, LARGE]), "adapters": True},
    ),
    "wide": (
        "the earlier Census pool: 2 x [256,128,64] + 2 x [512,256,128,64], adapters",
        {"pool_shapes": _pool_shapes([LARGE, (512, *LARGE)], [LARGE, (512, *LARGE)]), "adapters": True},
    ),
}


def _benchmark(
    pools: list[str], threads: int | None, rounds: int, batch_size: int, calls: int, compile: bool, device: str
) -> None:
    import statistics
    import time

    from emm.models.tabular import example_batch

    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()  # as the cost table does: see there
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__} on {device} ({where}); rows/s at batch {batch_size} (best of 3 "
        f"passes), latency at batch 1 (median of {calls} calls); median over {rounds} rounds"
    )
    variants = [BENCHMARK_POOLS[name] for name in pools]
    for title, options in variants:
        signature, emm, mmoe = _census_like(**options)
        emm.to(device), mmoe.to(device)
        started = time.perf_counter()
        form = inference_form(emm)
        built = time.perf_counter() - started
        models = {"MMoE (eager)": mmoe, "EMM (eager)": emm, "EMM (inference form)": form}
        big = example_batch(signature, batch_size, seed=1).to(device)
        singles = [example_batch(signature, 1, seed=seed).to(device) for seed in range(calls)]
        with torch.inference_mode():
            error = (emm(big) - form(big)).abs().max().item()
        print(f"\n{title}: form built in {built:.2f} s, max |eager - form| = {error:.1e}", flush=True)
        if compile:
            compiled = inference_form(emm, compile=True)
            started = time.perf_counter()
            with torch.inference_mode():
                compiled(big), compiled(singles[0]), compiled(example_batch(signature, 3, seed=2).to(device))
            print(f"  torch.compile of the form (3 batch shapes): {time.perf_counter() - started:.0f} s", flush=True)
            models["EMM (inference form, compiled)"] = compiled
        results = {name: ([], []) for name in models}
        with torch.inference_mode():
            for _ in range(rounds):
                for name, model in models.items():
                    model(big)
                    best = min(_timed(model, big) for _ in range(3))
                    results[name][0].append(batch_size / best)
                    for batch in singles[:10]:
                        model(batch)
                    results[name][1].append(statistics.median(_timed(model, batch) for batch in singles) * 1e3)
        macs = {"MMoE (eager)": multiply_adds_per_row(mmoe, big), "EMM (eager)": multiply_adds_per_row(emm, big)}
        for name, (throughput, latency) in results.items():
            mac = f"{macs[name] / 1e6:.2f} M MAC/row" if name in macs else ""
            throughput, latency = statistics.median(throughput), statistics.median(latency)
            print(f"  {name:32s} {throughput:>10,.0f} rows/s  {latency:7.3f} ms  {mac}")


def _timed(model: nn.Module, batch: TabularBatch) -> float:
    import time

    started = time.perf_counter()
    logits = model(batch)
    if logits.is_cuda:  # kernels run asynchronously: the time is the time to the result
        torch.cuda.synchronize(logits.device)
    return time.perf_counter() - started


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Times eager MMoE, eager EMM and EMM's inference form.")
    parser.add_argument("--pools", default=",".join(BENCHMARK_POOLS), help=f"some of {', '.join(BENCHMARK_POOLS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--calls", type=int, default=200, help="single-row calls per latency measurement")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd form (compiles first)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    arguments = parser.parse_args()
    _benchmark(
        arguments.pools.split(","),
        arguments.threads,
        arguments.rounds,
        arguments.batch_size,
        arguments.calls,
        arguments.compile,
        arguments.device,
    )

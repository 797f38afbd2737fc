"""The multi-task baselines EMM is compared with, one module per paper, all built from the same parts
(``common``): Shared-Bottom, MMoE, PLE, AITM and AdaTT."""

from __future__ import annotations

from emm.models.baselines.adatt import AdaTT
from emm.models.baselines.aitm import AITM
from emm.models.baselines.common import MultiTaskBaseline
from emm.models.baselines.mmoe import MMoE
from emm.models.baselines.ple import PLE
from emm.models.baselines.shared_bottom import SharedBottom

BASELINES: dict[str, type[MultiTaskBaseline]] = {
    model.KIND: model for model in (SharedBottom, MMoE, PLE, AITM, AdaTT)
}


def build_baseline(kind: str, signature: dict, tasks: list[str], config: dict | None = None) -> MultiTaskBaseline:
    """A freshly initialised baseline of ``kind`` for ``tasks``; ``config`` overrides its DEFAULT_CONFIG."""
    if kind not in BASELINES:
        raise ValueError(f"Unknown baseline kind {kind!r}; known: {sorted(BASELINES)}")
    return BASELINES[kind](signature, tasks, config)

"""Multi-task baselines trained end to end (SharedBottom, MMoE, PLE, AITM, AdaTT): Table I's comparison."""

from emm.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Table II: the EMM structure with and without trained components and MTM, switched by parameters."""

from emm.pipelines.ablations.pipeline import create_pipeline

__all__ = ["create_pipeline"]

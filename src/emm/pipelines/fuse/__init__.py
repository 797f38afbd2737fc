"""Algorithm 2: the EMM model trained over the frozen components."""

from emm.pipelines.fuse.pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Algorithm 1: every pool model cut into components of equal levels."""

from emm.pipelines.decompose.pipeline import create_pipeline

__all__ = ["create_pipeline"]

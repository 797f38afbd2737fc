"""The trained-model pool: one single-task MLP per node, as many as parameters declare."""

from emm.pipelines.train_pool.pipeline import create_pipeline

__all__ = ["create_pipeline"]

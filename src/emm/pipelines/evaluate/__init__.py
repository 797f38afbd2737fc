"""Test-set AUC of every pool model and of EMM, tables, ROC curves and the gates' weights."""

from emm.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Preprocessing: raw tables -> encoded Parquet tables, encoders and a feature schema."""

from emm.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]

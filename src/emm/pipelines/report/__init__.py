"""Tables and figures drawn from the catalogued evaluation: Table I, Table II, Figure 3, ROC curves,
the gates' choices and the cost table. Cheap to rerun: ``kedro run --pipelines=report``."""

from emm.pipelines.report.pipeline import create_adaptability_pipeline, create_pipeline

__all__ = ["create_adaptability_pipeline", "create_pipeline"]

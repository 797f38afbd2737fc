"""Serving: a dataset's fused model and encoders logged as one MLflow model, registered, served over HTTP.

The package imports nothing itself: project settings import its registry hook (``registry``) on every
``kedro`` command, which should not pay for torch; the pipeline (``pipeline``) imports the nodes.
"""

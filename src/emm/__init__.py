"""EMM: efficient multi-task modeling through automated fusion of trained models."""

__version__ = "0.1.0"

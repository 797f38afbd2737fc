"""Kedro datasets of the project."""

from emm.datasets.census_income import CensusIncomeRawDataset
from emm.datasets.torch_model import TorchModelDataset

__all__ = ["CensusIncomeRawDataset", "TorchModelDataset"]

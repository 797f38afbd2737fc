"""Kedro datasets of the project."""

from emm.datasets.ali_ccp import AliCCPCSVDataset, AliCCPRawDataset
from emm.datasets.aliexpress import AliExpressDataset
from emm.datasets.atomic import CSVDataset, JSONDataset, MatplotlibDataset, ParquetDataset, TextDataset
from emm.datasets.census_income import CensusIncomeRawDataset
from emm.datasets.parquet_table import ParquetTableDataset
from emm.datasets.served_model import ServedModelDataset
from emm.datasets.torch_model import TorchModelDataset

__all__ = [
    "AliCCPCSVDataset",
    "AliCCPRawDataset",
    "AliExpressDataset",
    "CSVDataset",
    "CensusIncomeRawDataset",
    "JSONDataset",
    "MatplotlibDataset",
    "ParquetDataset",
    "ParquetTableDataset",
    "ServedModelDataset",
    "TextDataset",
    "TorchModelDataset",
]

"""LightningDataModules shared by every pointgeo model, and readers of the official dataset formats."""

from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule
from pointgeo.datamodules.synthetic import SyntheticShapesDataModule

__all__ = ["CloudArrays", "PointCloudDataModule", "SyntheticShapesDataModule"]

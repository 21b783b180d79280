"""LightningDataModules shared by every pointgeo model, and readers of the official dataset formats (point clouds;
molecules from ASE databases and OMol25's ``.aselmdb`` shards)."""

from pointgeo.datamodules.articulated import ArticulatedPartsDataModule
from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule
from pointgeo.datamodules.modelnet import ModelNet10DataModule, ModelNet40DataModule, ModelNetDataModule
from pointgeo.datamodules.molecules import MoleculeDataModule, OMol25DataModule
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.datamodules.scanobjectnn import ScanObjectNNDataModule
from pointgeo.datamodules.shapenet_part import ShapeNetPartDataModule
from pointgeo.datamodules.synthetic import SyntheticShapesDataModule

__all__ = [
    "ArticulatedPartsDataModule",
    "CloudArrays",
    "DatasetFileError",
    "DatasetNotFoundError",
    "ModelNet10DataModule",
    "ModelNet40DataModule",
    "ModelNetDataModule",
    "MoleculeDataModule",
    "OMol25DataModule",
    "PointCloudDataModule",
    "ScanObjectNNDataModule",
    "ShapeNetPartDataModule",
    "SyntheticShapesDataModule",
]

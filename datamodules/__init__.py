"""LightningDataModules shared by every pointgeo model, and readers of the official dataset formats (point clouds;
molecules from ASE databases and OMol25's ``.aselmdb`` shards; crystals from CDVAE's CSVs; 3DMatch / 3DLoMatch
registration pairs; multi-object scenes of ModelNet shapes)."""

from pointgeo.datamodules.articulated import ArticulatedPartsDataModule
from pointgeo.datamodules.base import CloudArrays, PointCloudDataModule
from pointgeo.datamodules.crystals import CrystalDataModule
from pointgeo.datamodules.dfaust import DFAUSTDataModule
from pointgeo.datamodules.modelnet import ModelNet10DataModule, ModelNet40DataModule, ModelNetDataModule
from pointgeo.datamodules.molecules import MoleculeDataModule, OMol25DataModule
from pointgeo.datamodules.multi_object import MultiObjectScenesDataModule
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.datamodules.release import DatasetNotFoundError
from pointgeo.datamodules.scanobjectnn import ScanObjectNNDataModule
from pointgeo.datamodules.shapenet_part import ShapeNetPartDataModule
from pointgeo.datamodules.synthetic import SyntheticShapesDataModule
from pointgeo.datamodules.threedmatch import ThreeDMatchDataModule

__all__ = [
    "ArticulatedPartsDataModule",
    "CloudArrays",
    "CrystalDataModule",
    "DFAUSTDataModule",
    "DatasetFileError",
    "DatasetNotFoundError",
    "ModelNet10DataModule",
    "ModelNet40DataModule",
    "ModelNetDataModule",
    "MoleculeDataModule",
    "MultiObjectScenesDataModule",
    "OMol25DataModule",
    "PointCloudDataModule",
    "ScanObjectNNDataModule",
    "ShapeNetPartDataModule",
    "SyntheticShapesDataModule",
    "ThreeDMatchDataModule",
]

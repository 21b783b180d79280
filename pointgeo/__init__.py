"""pointgeo: rotation-invariant geometric deep learning for 3D point clouds, molecules and crystals."""

__version__ = "0.1.0"

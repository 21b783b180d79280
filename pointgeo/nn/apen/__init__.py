"""APEN (Atzmon et al., ICLR 2024): approximately piecewise E(3) equivariant part segmentation, one small module a
step: the mixture and its EM steps (``mixture``), the hard partition (``partition``), frame averaging per part
(``framing``), the blocks and decoder (``block``), the network and its registration (``network``)."""

from pointgeo.nn.apen.network import APEN, APENOutput, RELEASED_BLOCKS, TEST_KWARGS, apen

__all__ = ["APEN", "APENOutput", "RELEASED_BLOCKS", "TEST_KWARGS", "apen"]

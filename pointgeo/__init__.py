"""pointgeo: rotation-invariant geometric deep learning for 3D point clouds, molecules and crystals.

Importing pointgeo before torch backs large CPU tensors with transparent huge pages (PyTorch's own
``THP_MEM_ALLOC_ENABLE``, read once when torch starts): training allocates and frees neighbourhood tensors of hundreds
of MiB every step, and with 4 KiB pages the kernel's page faults took about a third of a CPU training step. Set
``THP_MEM_ALLOC_ENABLE=0`` to opt out; it has no effect when torch was imported first.
"""

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

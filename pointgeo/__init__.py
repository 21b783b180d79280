"""pointgeo: rotation-invariant geometric deep learning for 3D point clouds, molecules and crystals.

Importing pointgeo changes nothing in the importing process (no environment variable, no allocator setting); the
``pointgeo`` command and the benchmarks opt in to its CPU memory settings with :func:`enable_cpu_huge_pages`.
"""

import os
import sys

__version__ = "0.1.0"

HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
"""PyTorch's switch for backing large CPU allocations with transparent huge pages, read once when torch starts."""


def enable_cpu_huge_pages() -> bool:
    """Opt in to backing large CPU tensors with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``) for this process
    and its children; call it before importing torch.

    CPU training allocates and frees neighbourhood tensors of hundreds of MiB every step, and with 4 KiB pages the
    kernel's page faults took about a third of a training step. A value the user set already wins
    (``THP_MEM_ALLOC_ENABLE=0`` opts out), and once torch is imported the environment is left alone: torch has read
    the setting by then.

    Returns:
        Whether torch in this process uses (or, not yet imported, will use) transparent huge pages.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
    return os.environ.get(HUGE_PAGES_VARIABLE) == "1"

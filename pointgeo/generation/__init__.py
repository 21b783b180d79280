"""Crystal generation runs: a generative model's samples written as CIF files into a resumable folder, then the
benchmark's metrics (``metrics.json``) and a self-contained HTML report; ``pointgeo generate`` (``command.py``)."""

from pointgeo.generation.report import compute_metrics, load_reference, write_report
from pointgeo.generation.run import (
    CrystalSampler,
    GenerationFolderError,
    GenerationSettings,
    batch_seed,
    generate_crystals,
    read_generated,
)

__all__ = ["CrystalSampler", "GenerationFolderError", "GenerationSettings", "batch_seed", "compute_metrics",
           "generate_crystals", "load_reference", "read_generated", "write_report"]

"""Property optimisation in latent space and its success rates (CDVAE ``scripts/evaluate.py --tasks opt``,
``scripts/compute_metrics.py`` ``OptEval``), as ``pointgeo generate --optimize-starts R``.

The first ``R`` reference crystals (CDVAE: 100 test crystals) are encoded (``z ~ q(z | x)``); Adam lowers the
generator's property head from each ``z`` for ``steps`` steps (CDVAE: 5 000 of 1e-3), and the latents are decoded
(annealed Langevin dynamics) at ``saved`` points of the path (CDVAE: 10). Every decoded crystal is checked for
validity and scored by the property model (:class:`~pointgeo.metrics.crystals.PropertyPredictor`; CDVAE scores with
its separately trained property model); SR5 / SR10 / SR15 are the fractions of runs whose best valid crystal is at
or below the 5th / 10th / 15th percentile of the benchmark's training property
(:data:`~pointgeo.metrics.crystals.SR_THRESHOLDS`, :func:`~pointgeo.metrics.crystals.success_rates`).

The result goes to ``optimization.json`` in the generation folder (written whole, atomically) with the settings
that decide it; a rerun with equal settings reads it back instead of optimising again. Every random draw comes from
one generator seeded by ``sample_seed(seed, 0, 1)`` (the generation batches use two-part seeds).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pointgeo.datamodules.base import sample_seed
from pointgeo.generation.files import finite_or_none, write_json_atomic
from pointgeo.metrics.crystals import (
    SR_THRESHOLDS,
    Crystal,
    PropertyPredictor,
    batch_from_crystals,
    evaluate,
    success_rates,
)

OPTIMIZATION_FILE = "optimization.json"
OPTIMIZATION_FORMAT = "pointgeo-optimization/1"
PAPER_SR = {"perov_5": {"SR5": 0.52, "SR10": 0.65, "SR15": 0.79}, "carbon_24": {"SR5": 0.0, "SR10": 0.06, "SR15": 0.06},
            "mp_20": {"SR5": 0.78, "SR10": 0.86, "SR15": 0.90}}
"""CDVAE's success rates (Xie et al., ICLR 2022, Table 4)."""


@dataclass(frozen=True)
class OptimizationSettings:
    """Everything that decides an optimisation result (a stored result is reused only for equal settings)."""

    starts: int
    steps: int
    lr: float
    saved: int
    seed: int
    dataset: str
    reference: str
    checkpoint_sha256: str
    property_model_sha256: str

    def __post_init__(self) -> None:
        for key in ("starts", "saved"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"optimisation {key} must be a positive integer; got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"optimisation steps must be an integer >= 0; got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"optimisation lr must be > 0; got {self.lr!r}")
        if self.dataset not in SR_THRESHOLDS:
            raise ValueError(f"the success rates need the percentiles of a benchmark ({sorted(SR_THRESHOLDS)}); got "
                             f"dataset {self.dataset!r}: pass --dataset")


def optimize_and_score(task: Any, starts: list[Crystal], settings: OptimizationSettings,
                       property_model: PropertyPredictor, *, device: str | torch.device = "cpu",
                       progress: bool = True) -> dict[str, Any]:
    """Run the optimisation from ``starts`` (module docstring) and score it: ``{"success_rates", "thresholds",
    "saved_steps", "runs"}``, each run with the starting formula and, per saved step, the decoded crystal's
    formula, validity and predicted property. ``task`` has ``optimize_property_path`` (as
    :class:`~pointgeo.tasks.CDVAETask`) and ``dtype`` / ``device`` (a LightningModule's). ``progress``: a bar over
    the Langevin levels of the decodes."""
    from pointgeo.tasks.crystal_generation import saved_steps  # noqa: PLC0415

    if not callable(getattr(task, "optimize_property_path", None)):
        raise ValueError(f"{type(task).__name__} cannot optimise a property in latent space (no "
                         "optimize_property_path)")
    batch = batch_from_crystals(starts, dtype=task.dtype, device=task.device)
    generator = torch.Generator(device=device).manual_seed(sample_seed(settings.seed, 0, 1))
    with tqdm(desc="optimisation: decoding the path", unit="level", disable=not progress) as bar:
        def on_decode(decode: int, decodes: int, level: int, levels: int) -> None:
            bar.total = decodes * levels
            bar.n = decode * levels + level + 1
            bar.refresh()

        path = task.optimize_property_path(batch, steps=settings.steps, lr=settings.lr, generator=generator,
                                           num_saved=settings.saved, on_decode=on_decode)
    flat = [c for crystals in path for c in crystals]
    checked = evaluate(flat)
    valid = np.array([e.valid for e in checked]).reshape(len(path), len(starts))
    props = np.full(len(flat), np.nan)
    chosen = [i for i, e in enumerate(checked) if e.valid]
    if chosen:
        props[chosen] = property_model.predict_property([flat[i] for i in chosen])
    props = props.reshape(len(path), len(starts))
    thresholds = SR_THRESHOLDS[settings.dataset]
    rates = success_rates(props, valid, thresholds)
    best = rates.pop("best")
    runs = [{"start_formula": checked_formula(starts[r]), "best_property": best[r],
             "path": [{"formula": checked_formula(path[s][r]), "valid": bool(valid[s, r]),
                       "property": float(props[s, r])} for s in range(len(path))]} for r in range(len(starts))]
    return {"success_rates": rates, "thresholds": thresholds,
            "saved_steps": saved_steps(settings.steps, settings.saved), "runs": runs}


def checked_formula(crystal: Crystal) -> str | None:
    """The reduced formula of a crystal (``None`` for atomic numbers pymatgen does not know)."""
    from pymatgen.core import Composition, Element  # noqa: PLC0415

    types = np.asarray(crystal.atom_types)
    if len(types) == 0 or not ((types >= 1) & (types <= 118)).all():
        return None
    return Composition(Counter(Element.from_Z(int(z)).symbol for z in types)).reduced_formula


def run_optimization(task: Any, out: str | Path, starts: list[Crystal], settings: OptimizationSettings,
                     property_model: PropertyPredictor, *, device: str | torch.device = "cpu",
                     progress: bool = True) -> dict[str, Any]:
    """:func:`optimize_and_score` into ``out/optimization.json``, or the stored result of equal settings."""
    path = Path(out) / OPTIMIZATION_FILE
    wanted = asdict(settings)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("format") == OPTIMIZATION_FORMAT and stored.get("settings") == wanted:
            return stored
    except (OSError, ValueError):
        pass
    if len(starts) < settings.starts:
        raise ValueError(f"the optimisation starts from {settings.starts} reference crystals; the reference has "
                         f"{len(starts)}")
    result = {"format": OPTIMIZATION_FORMAT, "settings": wanted,
              **optimize_and_score(task, starts[:settings.starts], settings, property_model, device=device,
                                  progress=progress)}
    result = finite_or_none(result)
    write_json_atomic(path, result)
    return result

"""The crystal-generation metrics of CDVAE (Xie et al., ICLR 2022), with the benchmark's definitions and parameters.

The definitions are those of CDVAE's evaluation code (``scripts/compute_metrics.py``, ``scripts/eval_utils.py``):

* **construction**: a crystal ``(frac_coords, atom_types, lengths, angles)`` becomes a pymatgen ``Structure`` on
  ``Lattice.from_parameters``; a negative length, an exception or a volume below 0.1 Å³ makes it *not constructed*
  (structurally invalid).
* **structure validity**: every interatomic distance (pymatgen's periodic ``distance_matrix``, an atom and its own
  images not counted) is at least 0.5 Å, and the volume at least 0.1 Å³.
* **composition validity** (SMACT): counts reduced by their gcd; valid if one element, or all elements are metals
  (alloys), or some combination of the elements' oxidation states is charge neutral (``smact.neutral_ratios`` with
  ``threshold = max count``) and passes the Pauling electronegativity test (missing electronegativities pass).
* ``valid = composition valid AND structure valid``.
* **reconstruction**: ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist(pred, gt)``; match rate =
  pairs with a result / all pairs (invalid predictions and matcher errors count as misses); RMSE = mean of the
  returned RMS displacement over matched pairs (pymatgen normalises it by ``(V/N)^(1/3)``: unitless).
* **coverage**: structure fingerprint = mean over sites of matminer's ``CrystalNNFingerprint.from_preset("ops")``,
  composition fingerprint = matminer's ``ElementProperty.from_preset("magpie")`` standardised; Euclidean distances;
  COV-R = mean over reference crystals ``y`` of ``[min_x d_s(x, y) ≤ δ_s and min_x d_c(x, y) ≤ δ_c]`` (the two minima
  taken independently), COV-P = the same count over generated ``x`` (min over ``y``) divided by the number of all
  generated crystals (those whose fingerprint fails are dropped from the numerator only). Cut-offs
  :data:`COV_CUTOFFS`.
* **property statistics**: 1-D earth mover's distance (scipy ``wasserstein_distance``) between ``n_samples`` (1 000)
  random valid generated crystals and all reference crystals, of the density (g/cm³), of the number of distinct
  elements and, given a property model (:class:`PropertyPredictor`), of the property it predicts for both sides
  (CDVAE scores generated and reference crystals with the same model, not with the reference's DFT values).
* **optimisation success rates** SR5 / SR10 / SR15 (:func:`success_rates`): the fraction of the optimisation runs
  whose best valid decoded crystal has a predicted property at most the 5th / 10th / 15th percentile of the training
  property (:data:`SR_THRESHOLDS`).

One deviation: CDVAE standardises the composition fingerprints with 132 means and deviations hard-coded in its
repository (``cdvae/common/constants.py``), which pointgeo does not ship; :func:`coverage` standardises with the
reference set's own statistics unless ``composition_mean`` / ``composition_std`` are passed (pass CDVAE's to
reproduce its COV numbers exactly). The structure-fingerprint side is unaffected.

:class:`CrystalReconstruction` is the torchmetrics form of the reconstruction metric: it gathers the predicted
and reference crystals of every batch (across processes under DDP) and scores them at ``compute()``.

pymatgen, SMACT and matminer (extra ``crystals``) are imported inside the functions that need them.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

COV_CUTOFFS: dict[str, tuple[float, float]] = {"mp_20": (0.4, 10.0), "carbon_24": (0.2, 4.0), "perov_5": (0.2, 4.0)}
"""``(δ_struct, δ_comp)`` of each benchmark (CDVAE's ``COV_Cutoffs``)."""
MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
"""The ``StructureMatcher`` tolerances of the reconstruction benchmark."""
MIN_DISTANCE = 0.5
"""Å: the closest two atoms of a structurally valid crystal may be."""
MIN_VOLUME = 0.1
"""Å³: the smallest volume of a constructible crystal."""
SR_THRESHOLDS: dict[str, dict[str, float]] = {
    "mp_20": {"SR5": -3.1756, "SR10": -2.8220, "SR15": -2.5281},
    "carbon_24": {"SR5": -154.5271, "SR10": -154.4587, "SR15": -154.4421},
    "perov_5": {"SR5": 0.4392, "SR10": 0.6120, "SR15": 0.7365},
}
"""The 5th / 10th / 15th percentiles of each benchmark's full training property (CDVAE's ``Percentiles``;
``formation_energy_per_atom``, ``energy_per_atom``, ``heat_ref``)."""


class PropertyPredictor(Protocol):
    """A property model: ``predict_property(crystals) -> (n,)`` float64 predictions in the property's units, NaN
    for a crystal it cannot take (``pointgeo.tasks.CDVAETask`` is one: its encoder's mean latent through its
    property head)."""

    def predict_property(self, crystals: Sequence[Crystal]) -> np.ndarray:
        ...


@dataclass(frozen=True)
class Crystal:
    """One crystal as a model outputs it.

    Attributes:
        frac_coords: ``(N, 3)`` fractional coordinates.
        atom_types: ``(N,)`` atomic numbers.
        lengths: ``(3,)`` ``a, b, c`` (Å).
        angles: ``(3,)`` ``α, β, γ`` (degrees).
    """

    frac_coords: np.ndarray
    atom_types: np.ndarray
    lengths: np.ndarray
    angles: np.ndarray


def crystals_from_batch(frac_coords: Tensor, atom_types: Tensor, lengths: Tensor, angles: Tensor,
                        natoms: Tensor) -> list[Crystal]:
    """Split concatenated outputs into crystals: ``frac_coords (ΣN, 3)``, ``atom_types (ΣN,)``, ``lengths (B, 3)``,
    ``angles (B, 3)``, ``natoms (B,)`` (the layout of ``pointgeo.datamodules.crystals`` batches)."""
    counts = natoms.detach().cpu().long()
    if int(counts.sum()) != frac_coords.shape[0] or atom_types.shape[0] != frac_coords.shape[0]:
        raise ValueError(f"natoms sums to {int(counts.sum())} but frac_coords has {frac_coords.shape[0]} rows and "
                         f"atom_types {atom_types.shape[0]}")
    if lengths.shape != (len(counts), 3) or angles.shape != (len(counts), 3):
        raise ValueError(f"lengths and angles must have shape ({len(counts)}, 3); got {tuple(lengths.shape)} and "
                         f"{tuple(angles.shape)}")
    frac = frac_coords.detach().cpu().double().numpy()
    types = atom_types.detach().cpu().long().numpy()
    ends = np.cumsum(counts.numpy())
    starts = ends - counts.numpy()
    ls, an = lengths.detach().cpu().double().numpy(), angles.detach().cpu().double().numpy()
    return [Crystal(frac[a:b], types[a:b], ls[k], an[k]) for k, (a, b) in enumerate(zip(starts, ends))]


@dataclass
class CrystalBatch:
    """Crystals as one batch of tensors (the attribute names of ``pointgeo.datamodules.crystals`` batches):
    ``frac_coords (ΣN, 3)``, ``z (ΣN,)`` long, ``lengths (B, 3)``, ``angles (B, 3)``, ``cell (B, 3, 3)`` (rows =
    lattice vectors, pymatgen's orientation), ``natoms (B,)`` and ``batch (ΣN,)`` long."""

    frac_coords: Tensor
    z: Tensor
    lengths: Tensor
    angles: Tensor
    cell: Tensor
    natoms: Tensor
    batch: Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.natoms.shape[0])


def batch_from_crystals(crystals: Sequence[Crystal], *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> CrystalBatch:
    """The inverse of :func:`crystals_from_batch`: ``crystals`` (at least one) as a :class:`CrystalBatch`."""
    from pointgeo.geometry import lattice_params_to_matrix  # noqa: PLC0415

    if not crystals:
        raise ValueError("batch_from_crystals needs at least one crystal")
    natoms = torch.tensor([len(c.atom_types) for c in crystals], dtype=torch.long)
    frac = torch.from_numpy(np.concatenate([np.asarray(c.frac_coords, np.float64).reshape(-1, 3) for c in crystals]))
    z = torch.from_numpy(np.concatenate([np.asarray(c.atom_types, np.int64).reshape(-1) for c in crystals]))
    lengths = torch.from_numpy(np.stack([np.asarray(c.lengths, np.float64) for c in crystals]))
    angles = torch.from_numpy(np.stack([np.asarray(c.angles, np.float64) for c in crystals]))
    cell = lattice_params_to_matrix(lengths, angles)
    batch = torch.repeat_interleave(torch.arange(len(crystals)), natoms)
    return CrystalBatch(frac.to(device, dtype), z.to(device), lengths.to(device, dtype), angles.to(device, dtype),
                        cell.to(device, dtype), natoms.to(device), batch.to(device))


def crystal_from_structure(structure: Any) -> Crystal:
    """A pymatgen ``Structure`` as a :class:`Crystal` (its lattice parameters and fractional coordinates)."""
    return Crystal(np.asarray(structure.frac_coords, dtype=np.float64),
                   np.array([site.specie.Z for site in structure], dtype=np.int64),
                   np.array(structure.lattice.abc, dtype=np.float64),
                   np.array(structure.lattice.angles, dtype=np.float64))


def build_structure(crystal: Crystal) -> Any | None:
    """The pymatgen ``Structure`` of a crystal, or ``None`` when it cannot be constructed (a negative or non-finite
    length, a non-finite coordinate, no atoms, pymatgen refusing it, or a volume below :data:`MIN_VOLUME`)."""
    from pymatgen.core import Lattice, Structure  # noqa: PLC0415

    params = np.concatenate([crystal.lengths, crystal.angles]).astype(float)
    if (not np.isfinite(params).all() or not np.isfinite(crystal.frac_coords).all() or crystal.lengths.min() < 0
            or len(crystal.atom_types) == 0):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure(Lattice.from_parameters(*params.tolist()), crystal.atom_types.tolist(),
                                  crystal.frac_coords, coords_are_cartesian=False)
    except Exception:  # noqa: BLE001  (any refusal means "not constructible", as in the benchmark)
        return None
    if not structure.volume >= MIN_VOLUME:
        return None
    return structure


def structure_validity(structure: Any, cutoff: float = MIN_DISTANCE) -> bool:
    """Whether all periodic interatomic distances are ``≥ cutoff`` Å and the volume ``≥`` :data:`MIN_VOLUME`."""
    distances = np.asarray(structure.distance_matrix, dtype=np.float64)
    np.fill_diagonal(distances, np.inf)
    return bool(distances.min(initial=np.inf) >= cutoff and structure.volume >= MIN_VOLUME)


def composition_validity(atom_types: Sequence[int] | np.ndarray, *, use_pauling_test: bool = True,
                         include_alloys: bool = True) -> bool:
    """SMACT charge-neutrality and electronegativity screening of a composition (module docstring).

    Args:
        atom_types: atomic numbers of the crystal's atoms (any order, repeated).
    """
    import smact  # noqa: PLC0415
    from pymatgen.core import Element  # noqa: PLC0415
    from smact.screening import pauling_test  # noqa: PLC0415

    counter = Counter(int(z) for z in np.asarray(atom_types).tolist())
    if not counter:
        return False
    elements = sorted(counter)
    counts = np.array([counter[z] for z in elements])
    counts = counts // np.gcd.reduce(counts)
    symbols = tuple(Element.from_Z(z).symbol for z in elements)
    if len(symbols) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    space = smact.element_dictionary(symbols)
    smact_elements = [space[s] for s in symbols]
    electronegativities = [e.pauling_eneg for e in smact_elements]
    threshold = int(counts.max())
    stoichs = [(int(c),) for c in counts]
    # an element SMACT knows no oxidation state of (e.g. a noble gas) cannot take part in a neutral combination
    for ox_states in itertools.product(*(e.oxidation_states or () for e in smact_elements)):
        if not smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold):
            continue
        if not use_pauling_test:
            return True
        try:
            if pauling_test(ox_states, electronegativities):
                return True
        except TypeError:  # an element without an electronegativity passes, as in the benchmark
            return True
    return False


@dataclass
class EvaluatedCrystal:
    """A crystal with its structure and validity (fingerprints filled in by :func:`fingerprints`)."""

    crystal: Crystal
    structure: Any | None
    comp_valid: bool
    struct_valid: bool
    struct_fp: np.ndarray | None = field(default=None, repr=False)
    comp_fp: np.ndarray | None = field(default=None, repr=False)
    fingerprinted: bool = False

    @property
    def valid(self) -> bool:
        """Composition and structure valid (and, once fingerprinted, with a fingerprint, as in the benchmark)."""
        return self.comp_valid and self.struct_valid and (not self.fingerprinted or self.struct_fp is not None)


def evaluate(crystals: Sequence[Crystal | Any], *,
             on_item: Callable[[], None] | None = None) -> list[EvaluatedCrystal]:
    """Construct and check every crystal (:class:`Crystal` or pymatgen ``Structure``); ``on_item()`` is called after
    each (a progress bar's step)."""
    out = []
    for item in crystals:
        crystal = item if isinstance(item, Crystal) else crystal_from_structure(item)
        structure = build_structure(crystal)
        comp_valid = len(crystal.atom_types) > 0 and bool(
            ((crystal.atom_types >= 1) & (crystal.atom_types <= 103)).all()) and composition_validity(
            crystal.atom_types)
        struct_valid = structure is not None and structure_validity(structure)
        out.append(EvaluatedCrystal(crystal, structure, comp_valid, struct_valid))
        if on_item is not None:
            on_item()
    return out


def validity(evaluated: Sequence[EvaluatedCrystal]) -> dict[str, float]:
    """Fractions ``comp_valid``, ``struct_valid`` and ``valid`` over all crystals."""
    if not evaluated:
        raise ValueError("validity of an empty set of crystals")
    n = len(evaluated)
    return {"comp_valid": sum(e.comp_valid for e in evaluated) / n,
            "struct_valid": sum(e.struct_valid for e in evaluated) / n,
            "valid": sum(e.valid for e in evaluated) / n}


def reconstruction(predicted: Sequence[EvaluatedCrystal], reference: Sequence[EvaluatedCrystal], *,
                   require_valid: bool = True, **tolerances: float) -> dict[str, float]:
    """Match rate and RMSE of reconstructions (module docstring), ``predicted[i]`` against ``reference[i]``.

    ``require_valid=False`` also matches invalid predictions (not the benchmark's definition: there a prediction
    that fails the SMACT screening is a miss, so even a perfect model scores the valid fraction of the test set).

    Returns ``{"match_rate", "rms_dist"}`` (``rms_dist`` is NaN when nothing matched) and ``"matched"`` (count).
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: PLC0415

    if len(predicted) != len(reference) or not predicted:
        raise ValueError(f"reconstruction needs as many predictions as references (> 0); got {len(predicted)} and "
                         f"{len(reference)}")
    matcher = StructureMatcher(**{**MATCHER_TOLERANCES, **tolerances})
    rms = []
    for pred, ref in zip(predicted, reference):
        if (require_valid and not pred.valid) or pred.structure is None or ref.structure is None:
            continue
        try:
            result = matcher.get_rms_dist(pred.structure, ref.structure)
        except Exception:  # noqa: BLE001  (the benchmark counts a matcher failure as a miss)
            continue
        if result is not None:
            rms.append(float(result[0]))
    return {"match_rate": len(rms) / len(predicted), "rms_dist": float(np.mean(rms)) if rms else math.nan,
            "matched": len(rms)}


def fingerprints(evaluated: Sequence[EvaluatedCrystal], *, on_item: Callable[[], None] | None = None) -> None:
    """Fill in the structure and composition fingerprints (matminer; module docstring). A crystal whose structure
    fingerprint fails (or that cannot be constructed) keeps ``None`` for both and counts as invalid afterwards.
    ``on_item()`` is called after each crystal that needed its fingerprints (a progress bar's step)."""
    todo = [item for item in evaluated if not item.fingerprinted]
    if not todo:
        return
    from matminer.featurizers.composition.composite import ElementProperty  # noqa: PLC0415
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint  # noqa: PLC0415
    from pymatgen.core import Composition, Element  # noqa: PLC0415

    site_fp = CrystalNNFingerprint.from_preset("ops")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp_fp = ElementProperty.from_preset("magpie", impute_nan=False)  # NaN kept, as matminer 0.7 gave them
    for item in todo:
        item.fingerprinted = True
        if item.structure is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sites = [site_fp.featurize(item.structure, i) for i in range(len(item.structure))]
                    counts = Counter(int(z) for z in item.crystal.atom_types.tolist())
                    comp = comp_fp.featurize(Composition({Element.from_Z(z): n for z, n in counts.items()}))
            except Exception:  # noqa: BLE001, S110  (the benchmark counts a crystal without fingerprint as invalid)
                pass
            else:
                item.struct_fp = np.mean(np.asarray(sites, dtype=np.float64), axis=0)
                item.comp_fp = np.asarray(comp, dtype=np.float64)
        if on_item is not None:
            on_item()


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = (x - mean) / std
    return np.where(np.isnan(out), 0.0, out)  # CDVAE's StandardScaler(replace_nan_token=0)


def coverage(generated: Sequence[EvaluatedCrystal], reference: Sequence[EvaluatedCrystal], struct_cutoff: float,
             comp_cutoff: float, *, composition_mean: np.ndarray | None = None,
             composition_std: np.ndarray | None = None) -> dict[str, float]:
    """COV-R and COV-P (module docstring), plus the mean minimum distances (``amsd_*`` structure, ``amcd_*``
    composition) of recall and precision.

    Args:
        generated, reference: evaluated crystals (fingerprinted here when not yet).
        struct_cutoff, comp_cutoff: ``δ_s``, ``δ_c`` (:data:`COV_CUTOFFS`).
        composition_mean, composition_std: ``(132,)`` standardisation of the composition fingerprints; default
            the reference set's mean and population deviation (1 where that is 0), NaN features set to 0.

    Raises:
        ValueError: a reference crystal has no fingerprint, or no generated crystal has one.
    """
    from scipy.spatial.distance import cdist  # noqa: PLC0415

    fingerprints([*generated, *reference])
    missing = [k for k, r in enumerate(reference) if r.struct_fp is None]
    if missing:
        raise ValueError(f"reference crystals {missing[:10]} have no fingerprint (not constructible, or matminer "
                         "failed on them)")
    usable = [g for g in generated if g.struct_fp is not None and g.comp_fp is not None]
    if not usable:
        raise ValueError(f"none of the {len(generated)} generated crystals has a fingerprint")
    ref_s = np.stack([r.struct_fp for r in reference])
    ref_c = np.stack([r.comp_fp for r in reference])
    gen_s = np.stack([g.struct_fp for g in usable])
    gen_c = np.stack([g.comp_fp for g in usable])
    if composition_mean is None or composition_std is None:
        composition_mean = np.nanmean(ref_c, axis=0)
        composition_std = np.nanstd(ref_c, axis=0)
        composition_std = np.where((composition_std > 0) & np.isfinite(composition_std), composition_std, 1.0)
        composition_mean = np.where(np.isfinite(composition_mean), composition_mean, 0.0)
    gen_c = _standardise(gen_c, composition_mean, composition_std)
    ref_c = _standardise(ref_c, composition_mean, composition_std)
    d_s, d_c = cdist(gen_s, ref_s), cdist(gen_c, ref_c)  # (generated, reference)
    recall_s, recall_c = d_s.min(axis=0), d_c.min(axis=0)
    precision_s, precision_c = d_s.min(axis=1), d_c.min(axis=1)
    return {
        "cov_recall": float(np.mean((recall_s <= struct_cutoff) & (recall_c <= comp_cutoff))),
        "cov_precision": float(np.sum((precision_s <= struct_cutoff) & (precision_c <= comp_cutoff)) / len(generated)),
        "amsd_recall": float(recall_s.mean()), "amsd_precision": float(precision_s.mean()),
        "amcd_recall": float(recall_c.mean()), "amcd_precision": float(precision_c.mean()),
    }


def property_statistics(generated: Sequence[EvaluatedCrystal], reference: Sequence[EvaluatedCrystal], *,
                        n_samples: int = 1000, seed: int = 0,
                        property_model: PropertyPredictor | None = None) -> dict[str, float]:
    """Earth mover's distances of density (g/cm³), number of distinct elements and (with ``property_model``) the
    predicted property between ``n_samples`` random valid generated crystals (drawn without replacement, seeded)
    and all constructible reference crystals.

    Returns ``{"wdist_density", "wdist_num_elems"}`` and, with a property model, ``"wdist_prop"`` (over the
    crystals whose prediction is finite; NaN when a side has none).

    Raises:
        ValueError: fewer than ``n_samples`` valid generated crystals (as the benchmark; lower ``n_samples``).
    """
    from scipy.stats import wasserstein_distance  # noqa: PLC0415

    valid = [g for g in generated if g.valid]
    if len(valid) < n_samples:
        raise ValueError(f"not enough valid generated crystals for the property statistics: {len(valid)} < "
                         f"n_samples={n_samples}")
    chosen = np.random.default_rng(seed).choice(len(valid), n_samples, replace=False)
    sample = [valid[i] for i in chosen]
    refs = [r for r in reference if r.structure is not None]
    out = {"wdist_density": float(wasserstein_distance([s.structure.density for s in sample],
                                                       [s.structure.density for s in refs])),
           "wdist_num_elems": float(wasserstein_distance([len(set(s.structure.species)) for s in sample],
                                                         [len(set(s.structure.species)) for s in refs]))}
    if property_model is not None:
        pred = np.asarray(property_model.predict_property([s.crystal for s in sample]), dtype=np.float64)
        true = np.asarray(property_model.predict_property([r.crystal for r in refs]), dtype=np.float64)
        pred, true = pred[np.isfinite(pred)], true[np.isfinite(true)]
        out["wdist_prop"] = float(wasserstein_distance(pred, true)) if len(pred) and len(true) else math.nan
    return out


def success_rates(properties: np.ndarray, valid: np.ndarray, thresholds: dict[str, float]) -> dict[str, float]:
    """CDVAE's optimisation success rates (``OptEval.get_success_rate``).

    Args:
        properties: ``(S, R)`` the predicted property of the crystal decoded at saved step ``s`` of run ``r``.
        valid: ``(S, R)`` bool, whether that crystal is valid (an invalid one never counts, whatever its value).
        thresholds: ``{name: t}``, e.g. a row of :data:`SR_THRESHOLDS`.

    Returns:
        ``{name: mean over runs of [min over the valid saved steps of the property ≤ t]}`` (a run without a valid
        crystal fails every threshold), plus ``"best"``, the ``(R,)`` list of those minima (``inf`` for none).
    """
    props, ok = np.asarray(properties, dtype=np.float64), np.asarray(valid, dtype=bool)
    if props.ndim != 2 or props.shape != ok.shape or props.shape[1] == 0:
        raise ValueError(f"properties and valid must have the same shape (S, R) with R > 0; got {props.shape} and "
                         f"{ok.shape}")
    best = np.where(ok & np.isfinite(props), props, np.inf).min(axis=0)
    out: dict[str, Any] = {name: float((best <= t).mean()) for name, t in thresholds.items()}
    out["best"] = best.tolist()
    return out


class CrystalReconstruction(Metric):
    """Reconstruction match rate and RMSE (:func:`reconstruction`) as a ``torchmetrics.Metric``.

    ``update(pred, target)`` takes two batches of crystals, each a mapping (or torch-geometric ``Batch``) with
    ``frac_coords (ΣN, 3)``, ``z (ΣN,)``, ``lengths (B, 3)``, ``angles (B, 3)``, ``natoms (B,)`` (``pred`` may
    have other atom counts than ``target``); ``compute()`` returns ``{"match_rate", "rms_dist"}`` as tensors.
    """

    full_state_update = False
    KEYS = ("frac_coords", "z", "lengths", "angles", "natoms")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for side in ("pred", "target"):
            for key in self.KEYS:
                self.add_state(f"{side}_{key}", default=[], dist_reduce_fx="cat")

    def update(self, pred: Any, target: Any) -> None:
        if int(pred["natoms"].shape[0]) != int(target["natoms"].shape[0]):
            raise ValueError(f"pred holds {pred['natoms'].shape[0]} crystals but target {target['natoms'].shape[0]}")
        for side, batch in (("pred", pred), ("target", target)):
            for key in self.KEYS:
                getattr(self, f"{side}_{key}").append(batch[key].detach())

    def _crystals(self, side: str) -> list[Crystal]:
        parts = [getattr(self, f"{side}_{key}") for key in self.KEYS]
        joined = [torch.cat(p) if isinstance(p, list) else p for p in parts]
        return crystals_from_batch(*joined)

    def compute(self) -> dict[str, Tensor]:
        if not self.pred_natoms:
            raise ValueError("CrystalReconstruction.compute() before any update()")
        result = reconstruction(evaluate(self._crystals("pred")), evaluate(self._crystals("target")))
        return {"match_rate": torch.tensor(result["match_rate"], dtype=torch.float64),
                "rms_dist": torch.tensor(result["rms_dist"], dtype=torch.float64)}


__all__ = ["CrystalReconstruction", "COV_CUTOFFS", "MATCHER_TOLERANCES", "MIN_DISTANCE", "MIN_VOLUME", "SR_THRESHOLDS",
           "Crystal", "CrystalBatch", "EvaluatedCrystal", "PropertyPredictor", "batch_from_crystals", "build_structure",
           "composition_validity", "coverage", "crystal_from_structure", "crystals_from_batch", "evaluate",
           "fingerprints", "property_statistics", "reconstruction", "structure_validity", "success_rates", "validity"]

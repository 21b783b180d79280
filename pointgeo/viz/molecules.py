"""What ``pointgeo view`` shows for a potential: a molecule and random SO(3) rotations of it with predicted forces.

:func:`read_molecule` reads any file ``ase.io.read`` reads into the molecule data contract
(:mod:`pointgeo.datamodules.molecules`), :func:`build_molecule_views` runs the potential on the molecule and its
rotations in one batch, and :func:`molecule_scene` turns the views into what is drawn: one sphere per atom
(Jmol's CPK-like element colours, radius from the covalent radius, both from ``ase.data``) and one arrow per atom and
copy for the predicted forces (plus one for the reference forces when the molecule has them). For an equivariant
model the forces of rotation ``R`` are the original forces rotated, ``F(x Rᵀ) = F(x) Rᵀ``; each view reports the
measured ``‖F(x Rᵀ) − F(x) Rᵀ‖ / ‖F(x)‖``. The energy shown is the one the network predicts, i.e. without
the per-element reference energies when its training data had them subtracted (as
:class:`~pointgeo.calculators.PointGeoCalculator` reports it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointgeo.geometry import MOLECULE_FIELDS, POINT_CLOUD_FIELDS, apply_rigid_motion
from pointgeo.viz.scene import rotation_stack

PREDICTED, REFERENCE = (0.8, 0.0, 0.8), (0.0, 0.6, 0.0)
"""Arrow colours: predicted forces magenta, reference forces green (hues no common element has in Jmol's colours)."""
ATOM_SCALE = 0.5
"""Sphere radius = ``ATOM_SCALE`` × the element's covalent radius (a ball-and-stick-like look)."""
ARROW_LENGTH = 0.6
"""The longest force arrow of the scene, in units of the molecule's (normalised) radius."""
CELL_CORNERS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
"""``(8, 3)`` fractional coordinates of the corners of a unit cell."""
CELL_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1])
"""``(12, 2)`` the corner pairs joined by a cell edge (corners that differ in one fractional coordinate)."""


@dataclass
class MoleculeView:
    """One copy of the molecule: rotated positions ``(N, 3)`` (Å, centred), the rotation ``(3, 3)``, predicted
    energy (eV) and forces ``(N, 3)`` (eV/Å), the rotated reference forces or ``None``, and the measured force
    equivariance error against the unrotated copy; for a periodic structure, the corners ``(8, 3)`` of its unit
    cell (:data:`CELL_CORNERS` in the lattice, moved with the atoms), else ``None``."""

    pos: np.ndarray
    z: np.ndarray
    rotation: np.ndarray
    energy: float
    forces: np.ndarray
    reference: np.ndarray | None
    equivariance_error: float
    cell_corners: np.ndarray | None = None


def read_molecule(path: str | Path, charge: int | None = None, spin: int | None = None) -> Any:
    """The first structure of ``path`` (any format ``ase.io.read`` reads) as a molecule ``Data`` of the contract
    (``pos``, ``z``, ``charge``, ``spin``; ``forces`` when the file stores them; ``cell``, ``pbc`` if periodic).
    Charge and spin come from the arguments, else ``atoms.info["charge"]`` / ``atoms.info["spin"]``, else 0 and 1.

    Raises :class:`~pointgeo.datamodules.readers.DatasetFileError` naming the file when it cannot be read.
    """
    from ase.io import read
    from torch_geometric.data import Data

    from pointgeo.datamodules.ase_readers import check_geometry
    from pointgeo.datamodules.readers import DatasetFileError

    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"no such file: {path}")
    try:
        atoms = read(path, index=0)
    except Exception as exc:  # noqa: BLE001  (ASE's readers raise many kinds of errors for bad files)
        raise DatasetFileError(f"{path} is not a structure file ase.io.read can read: "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if len(atoms) == 0:
        raise DatasetFileError(f"{path} contains no atoms")
    pos, z = np.asarray(atoms.positions, dtype=np.float64), np.asarray(atoms.numbers, dtype=np.int64)
    check_geometry(z, pos, str(path))
    fields = {"pos": torch.from_numpy(pos).float(), "z": torch.from_numpy(z),
              "charge": torch.tensor([int(atoms.info.get("charge", 0) if charge is None else charge)]),
              "spin": torch.tensor([int(atoms.info.get("spin", 1) if spin is None else spin)])}
    try:
        forces = atoms.get_forces() if atoms.calc is not None else atoms.arrays.get("forces")
    except Exception:  # noqa: BLE001  (a calculator without stored forces)
        forces = None
    if forces is not None:
        fields["forces"] = torch.as_tensor(np.asarray(forces), dtype=torch.float32)
    if atoms.pbc.any():  # a crystal: the potential sees its lattice (drawn is the unit cell's atoms only)
        fields["cell"] = torch.tensor(atoms.cell.array, dtype=torch.float32)[None]
        fields["pbc"] = torch.tensor(atoms.pbc)[None]
    return Data(**fields)


def build_molecule_views(task: Any, molecule: Any, n_rotations: int, seed: int = 0) -> list[MoleculeView]:
    """The molecule (centred on its centroid) and ``n_rotations`` Haar-random rotations of it, energies and forces
    predicted in one batch by ``task`` (a :class:`~pointgeo.tasks.PotentialTask`)."""
    from torch_geometric.data import Batch, Data

    from pointgeo.tasks.potential import predict_potential

    rot = rotation_stack(n_rotations, seed)
    pos = molecule.pos.double() - molecule.pos.double().mean(0)
    n = len(pos)
    fields = {"pos": pos, "z": molecule.z, "charge": molecule.charge.reshape(1), "spin": molecule.spin.reshape(1)}
    reference = getattr(molecule, "forces", None)
    if reference is not None:
        fields["forces"] = reference.double()
    if getattr(molecule, "cell", None) is not None:  # lattice rows rotate with the atoms
        fields["cell"], fields["pbc"] = molecule.cell.double().reshape(1, 3, 3), molecule.pbc
    unrotated = Batch.from_data_list([Data(**fields)] * len(rot))  # one copy per rotation (a few), not per atom
    moved = apply_rigid_motion(unrotated, MOLECULE_FIELDS, rot)  # in float64, by the declaration
    inputs = copy.copy(moved)  # what the network sees: positions and cells in float32, no reference forces
    inputs.pos = moved.pos.float()
    if "cell" in fields:
        inputs.cell = moved.cell.float()
    if "forces" in fields:
        del inputs.forces
    out = {k: v.detach() for k, v in predict_potential(task.net, inputs).items()}
    forces = out["forces"].detach().double().reshape(len(rot), n, 3)
    probe = copy.copy(unrotated)
    probe.forces = forces[0].repeat(len(rot), 1)  # the unrotated copy's forces, to be rotated into each copy
    expected = apply_rigid_motion(probe, MOLECULE_FIELDS, rot).forces.reshape(len(rot), n, 3)
    scale = forces[0].norm().clamp_min(1e-30)
    errors = (forces - expected).flatten(1).norm(dim=1) / scale
    rotated_pos = moved.pos.reshape(len(rot), n, 3)
    rotated_reference = None if reference is None else moved.forces.reshape(len(rot), n, 3)
    corners = None
    if "cell" in fields:  # the unit cell's corners are points: they move with the atoms
        at_origin = torch.from_numpy(CELL_CORNERS) @ fields["cell"][0] - molecule.pos.double().mean(0)
        corners = apply_rigid_motion({"pos": at_origin.expand(len(rot), 8, 3)}, POINT_CLOUD_FIELDS, rot)["pos"]
    return [MoleculeView(rotated_pos[i].numpy(), molecule.z.numpy(), rot[i].numpy(),
                         float(out["energy"][i]), forces[i].numpy(),
                         None if rotated_reference is None else rotated_reference[i].numpy(),
                         float(errors[i]), None if corners is None else corners[i].numpy()) for i in range(len(rot))]


def molecule_scene(views: list[MoleculeView]) -> dict[str, np.ndarray]:
    """What is drawn, in normalised units (each copy fits the unit sphere; copy ``i`` is drawn in cell ``i``):

    ``sphere_centre (S, 3)``, ``sphere_radius (S,)``, ``sphere_colour (S, 3)``, ``sphere_cell (S,)`` with one sphere
    per atom and copy, and ``arrow_start (A, 3)``, ``arrow_vector (A, 3)``, ``arrow_colour (A, 3)``,
    ``arrow_cell (A,)`` with one predicted-force arrow per atom and copy, then one reference-force arrow per atom and
    copy when the molecule has reference forces. Arrows share one scale: the longest is ``ARROW_LENGTH``. A periodic
    structure adds its unit cell: ``line_start (L, 3)``, ``line_end (L, 3)``, ``line_cell (L,)``, the 12 edges of
    :data:`CELL_EDGES` per copy (the scale then fits the cell too).
    """
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    z = views[0].z
    radius = ATOM_SCALE * covalent_radii[z]
    extent = float(np.linalg.norm(views[0].pos, axis=1).max() + radius.max())
    corners = None if views[0].cell_corners is None else np.stack([v.cell_corners for v in views])  # (C, 8, 3)
    if corners is not None:
        extent = max(extent, float(np.linalg.norm(corners[0], axis=1).max()))
    fields = [np.stack([v.forces for v in views])]
    if views[0].reference is not None:
        fields.append(np.stack([v.reference for v in views]))
    longest = max(float(np.linalg.norm(f, axis=-1).max()) for f in fields)
    force_scale = ARROW_LENGTH / longest if longest > 0 else 0.0
    centres = np.stack([v.pos for v in views]) / extent  # (C, N, 3)
    cells = np.repeat(np.arange(len(views)), len(z))
    arrows = np.concatenate(fields)  # (C or 2C, N, 3)
    colours = np.concatenate([np.tile(c, (len(views) * len(z), 1)) for c in (PREDICTED, REFERENCE)[: len(fields)]])
    scene = {
        "sphere_centre": centres.reshape(-1, 3), "sphere_radius": np.tile(radius / extent, len(views)),
        "sphere_colour": np.tile(jmol_colors[z], (len(views), 1)), "sphere_cell": cells,
        "arrow_start": np.tile(centres.reshape(-1, 3), (len(fields), 1)),
        "arrow_vector": arrows.reshape(-1, 3) * force_scale, "arrow_colour": colours,
        "arrow_cell": np.tile(cells, len(fields)),
    }
    if corners is not None:
        scene["line_start"] = (corners[:, CELL_EDGES[:, 0]] / extent).reshape(-1, 3)
        scene["line_end"] = (corners[:, CELL_EDGES[:, 1]] / extent).reshape(-1, 3)
        scene["line_cell"] = np.repeat(np.arange(len(views)), len(CELL_EDGES))
    return scene


def crystal_scene(crystals: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """What is drawn for periodic structures without forces (generated crystals): crystal ``i`` in cell ``i``, its
    atoms wrapped into the unit cell and the cell centred on the origin, each crystal scaled to fit the unit sphere.

    Args:
        crystals: per crystal ``(frac_coords (N, 3), atomic numbers (N,), lattice (3, 3))``, lattice rows = vectors.

    Returns:
        The sphere and line arrays of :func:`molecule_scene` (no arrows): ``sphere_centre (S, 3)``,
        ``sphere_radius (S,)``, ``sphere_colour (S, 3)``, ``sphere_cell (S,)``, ``line_start (L, 3)``,
        ``line_end (L, 3)``, ``line_cell (L,)`` with the 12 :data:`CELL_EDGES` of every cell.
    """
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sphere_centre", "sphere_radius", "sphere_colour",
                                                          "sphere_cell", "line_start", "line_end", "line_cell")}
    for i, (frac, z, lattice) in enumerate(crystals):
        lattice = np.asarray(lattice, dtype=np.float64)
        z = np.asarray(z, dtype=np.int64)
        centre = 0.5 * lattice.sum(0)
        pos = np.mod(np.asarray(frac, dtype=np.float64), 1.0) @ lattice - centre
        corners = CELL_CORNERS @ lattice - centre
        radius = ATOM_SCALE * covalent_radii[z]
        extent = max(float(np.linalg.norm(corners, axis=1).max()),
                     float((np.linalg.norm(pos, axis=1) + radius).max(initial=0.0)))
        parts["sphere_centre"].append(pos / extent)
        parts["sphere_radius"].append(radius / extent)
        parts["sphere_colour"].append(jmol_colors[z])
        parts["sphere_cell"].append(np.full(len(z), i))
        parts["line_start"].append(corners[CELL_EDGES[:, 0]] / extent)
        parts["line_end"].append(corners[CELL_EDGES[:, 1]] / extent)
        parts["line_cell"].append(np.full(len(CELL_EDGES), i))
    return {k: np.concatenate(v) for k, v in parts.items()}


def molecule_title(view: MoleculeView, index: int) -> str:
    """The caption of a view: which copy, predicted energy, and the measured force equivariance error."""
    name = "original" if index == 0 else f"rotation {index}"
    error = "" if index == 0 else f", force eq. err {view.equivariance_error:.1e}"
    return f"{name}\nE = {view.energy:.4f} eV{error}"

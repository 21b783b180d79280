"""Field declarations and the one rigid-motion function, on dense dict batches and torch-geometric batches."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from pointgeo.geometry import (
    POINT_CLOUD_FIELDS,
    FieldSpec,
    apply_rigid_motion,
    random_rotations,
    rotate,
)

MOLECULE = FieldSpec(points=("pos",), vectors=("forces",), lattice=("cell",),
                     invariant=("energy", "charge", "spin", "z"))

# A quarter turn about z maps (x, y, z) -> (-y, x, z) as row vectors x @ R^T.
RZ90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
# A half turn about x maps (x, y, z) -> (x, -y, -z).
RX180 = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)


def test_field_spec_is_a_frozen_mapping_of_kinds() -> None:
    spec = MOLECULE
    assert spec["pos"] == "points" and spec["forces"] == "vectors" and spec["cell"] == "lattice"
    assert spec["energy"] == "invariant"
    assert list(spec) == ["pos", "forces", "cell", "energy", "charge", "spin", "z"]
    assert len(spec) == 7 and "spin" in spec and "normal" not in spec
    assert spec.moving() == ("pos", "forces", "cell")
    with pytest.raises(Exception):  # frozen
        spec.points = ("x",)  # type: ignore[misc]
    with pytest.raises(ValueError, match="'pos' is declared both as points and as vectors"):
        FieldSpec(points=("pos",), vectors=("pos",))
    with pytest.raises(TypeError, match=r"not the string 'pos'"):
        FieldSpec(points="pos")  # type: ignore[arg-type]
    merged = FieldSpec(points=("pos",)).merged(FieldSpec(vectors=("forces",), points=("pos",)))
    assert merged == FieldSpec(points=("pos",), vectors=("forces",))
    assert hash(merged) == hash(FieldSpec(points=("pos",), vectors=("forces",)))


def test_dense_batch_hand_worked_values_float64_exact() -> None:
    pos = torch.tensor([[[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    normal = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]],
                          dtype=torch.float64)
    label = torch.tensor([3, 7])
    batch = {"pos": pos, "normal": normal, "label": label}
    rot = torch.stack([RZ90, RX180])
    shift = torch.tensor([[10.0, 20.0, 30.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    out = apply_rigid_motion(batch, POINT_CLOUD_FIELDS, rot, shift)
    expected_pos = torch.tensor([[[8.0, 21.0, 33.0], [9.5, 19.0, 30.0]], [[1.0, -2.0, -4.0], [0.0, 0.0, -2.0]]],
                                dtype=torch.float64)
    expected_normal = torch.tensor([[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]],
                                   dtype=torch.float64)
    assert torch.equal(out["pos"], expected_pos)
    assert torch.equal(out["normal"], expected_normal)  # normals rotate but never translate
    assert out["label"] is label
    assert torch.equal(batch["pos"], pos) and out is not batch  # the input is not modified


def test_dense_matches_rotate_and_single_sample_form() -> None:
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(4, 50, 3, generator=gen, dtype=torch.float64)
    rot = random_rotations(4, generator=gen)
    out = apply_rigid_motion({"pos": pos}, POINT_CLOUD_FIELDS, rot)
    assert torch.equal(out["pos"], rotate(pos, rot))
    single = apply_rigid_motion({"pos": pos[2], "normal": pos[1]}, POINT_CLOUD_FIELDS, rot[2], torch.ones(3).double())
    assert torch.equal(single["pos"], rotate(pos[2], rot[2]) + 1.0)
    assert torch.equal(single["normal"], rotate(pos[1], rot[2]))


def test_float32_field_is_moved_in_float64_and_rounded_once() -> None:
    gen = torch.Generator().manual_seed(2)
    pos = torch.randn(2, 30, 3, generator=gen)
    rot = random_rotations(2, generator=gen)
    out = apply_rigid_motion({"pos": pos}, POINT_CLOUD_FIELDS, rot)
    assert out["pos"].dtype == torch.float32
    assert torch.equal(out["pos"], (pos.double() @ rot.transpose(-1, -2)).float())


def _molecules() -> tuple[Batch, Data, Data]:
    a = Data(pos=torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64),
             forces=torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 2.0], [0.5, 0.0, 0.0]], dtype=torch.float64),
             cell=torch.diag(torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)).unsqueeze(0),
             energy=torch.tensor([-3.25], dtype=torch.float64), charge=torch.tensor([1]), spin=torch.tensor([2]),
             z=torch.tensor([1, 6, 8]))
    b = Data(pos=torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]], dtype=torch.float64),
             forces=torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64),
             cell=torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]], dtype=torch.float64),
             energy=torch.tensor([-1.0], dtype=torch.float64), charge=torch.tensor([-1]), spin=torch.tensor([1]),
             z=torch.tensor([1, 1]))
    return Batch.from_data_list([a, b]), a, b


def test_graph_batch_hand_worked_values() -> None:
    batch, _, _ = _molecules()
    rot = torch.stack([RZ90, RX180])
    shift = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    out = apply_rigid_motion(batch, MOLECULE, rot, shift)
    assert torch.equal(out.pos, torch.tensor([[1.0, 2.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 4.0],
                                              [1.0, -2.0, -2.5], [-1.0, 2.0, 3.5]], dtype=torch.float64))
    # forces rotate with their molecule's rotation and are never translated
    assert torch.equal(out.forces, torch.tensor([[-1.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 0.5, 0.0],
                                                 [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
    # lattice rows rotate: a = (4,0,0) -> (0,4,0), b = (0,5,0) -> (-5,0,0); second cell by the half turn about x
    assert torch.equal(out.cell[0], torch.tensor([[0.0, 4.0, 0.0], [-5.0, 0.0, 0.0], [0.0, 0.0, 6.0]],
                                                 dtype=torch.float64))
    assert torch.equal(out.cell[1], torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, -1.0], [1.0, 0.0, -1.0]],
                                                 dtype=torch.float64))
    for key in ("energy", "charge", "spin", "z", "batch", "ptr"):
        assert out[key] is batch[key], key  # invariants are untouched, the very same tensors
    assert torch.equal(batch.pos[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # input unchanged
    assert isinstance(out, Batch) and out.num_graphs == 2
    assert out.to_data_list()[1].pos.shape == (2, 3)


def test_graph_batch_agrees_with_per_molecule_motion_and_fractional_coordinates_stay() -> None:
    batch, a, b = _molecules()
    gen = torch.Generator().manual_seed(3)
    rot = random_rotations(2, generator=gen)
    shift = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    out = apply_rigid_motion(batch, MOLECULE, rot, shift)
    for i, mol in enumerate((a, b)):
        alone = apply_rigid_motion(mol, MOLECULE, rot[i], shift[i])  # one Data, one (3, 3) motion
        part = out.to_data_list()[i]
        assert torch.allclose(part.pos, alone.pos, rtol=0, atol=1e-15)
        assert torch.allclose(part.forces, rotate(mol.forces, rot[i]), rtol=0, atol=1e-15)
        # fractional coordinates f = (x - t) L^-1 do not move under the rotation
        frac = (part.pos - shift[i]) @ torch.linalg.inv(part.cell[0])
        assert torch.allclose(frac, mol.pos @ torch.linalg.inv(mol.cell[0]), rtol=0, atol=1e-12)
    # distances and the force-position inner products are preserved (a rigid motion, float64)
    assert torch.allclose(torch.cdist(out.pos[:3], out.pos[:3]), torch.cdist(a.pos, a.pos), rtol=0, atol=1e-14)


def test_missing_declared_keys_are_skipped_and_undeclared_pass_through() -> None:
    batch, _, _ = _molecules()
    del batch.forces
    out = apply_rigid_motion(batch, FieldSpec(points=("pos",), vectors=("forces", "dipole")), RZ90.expand(2, 3, 3))
    assert "forces" not in out and torch.equal(out.cell, batch.cell)  # cell not declared here: untouched


def test_bad_input_is_one_clear_error() -> None:
    batch, _, _ = _molecules()
    with pytest.raises(ValueError, match="rotation holds 3 motions but the batch has 2 graphs"):
        apply_rigid_motion(batch, MOLECULE, RZ90.expand(3, 3, 3))
    with pytest.raises(ValueError, match=r"translation must have shape \(2, 3\)"):
        apply_rigid_motion(batch, MOLECULE, RZ90.expand(2, 3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"rotation must be a floating-point tensor of shape \(B, 3, 3\)"):
        apply_rigid_motion(batch, MOLECULE, torch.eye(4))
    with pytest.raises(TypeError, match="fields must be a pointgeo.geometry.FieldSpec"):
        apply_rigid_motion(batch, {"pos": "points"}, RZ90)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"batch\['label'\] is declared as points"):
        apply_rigid_motion({"label": torch.tensor([1])}, FieldSpec(points=("label",)), RZ90[None])
    with pytest.raises(ValueError, match=r"batch\['pos'\] \(points\) must have shape \(2, N, 3\)"):
        apply_rigid_motion({"pos": torch.zeros(3, 5, 3)}, POINT_CLOUD_FIELDS, RZ90.expand(2, 3, 3))
    with pytest.raises(TypeError, match="batch must be a dict of tensors or a torch_geometric Data/Batch"):
        apply_rigid_motion([torch.zeros(1, 3)], POINT_CLOUD_FIELDS, RZ90)  # type: ignore[arg-type]


def test_point_cloud_datamodule_rotates_through_the_declaration() -> None:
    from pointgeo.datamodules import SyntheticShapesDataModule

    dm = SyntheticShapesDataModule(num_train=40, num_test=10, num_points=64, train_rotation="so3", use_normals=True)
    assert dm.fields is POINT_CLOUD_FIELDS
    val = dm.dataset("val")
    sample = val[0]
    unrotated = torch.from_numpy(val.arrays.pos[0][:64]).double()
    rot = sample["rotation"].double()
    # the rotation is recorded in float32; the positions were rotated by the float64 original
    assert torch.allclose(sample["pos"].double(), unrotated @ rot.T, rtol=0, atol=1e-6)
    assert torch.allclose(sample["normal"].norm(dim=-1), torch.ones(64), rtol=0, atol=1e-6)
    angle = math.acos(max(-1.0, min(1.0, (torch.trace(rot).item() - 1) / 2)))
    assert angle > 1e-3  # an actual rotation was applied


def test_the_rotation_record_composes_in_both_batch_structures() -> None:
    gen = torch.Generator().manual_seed(5)
    first, second = random_rotations(2, generator=gen), random_rotations(2, generator=gen)
    dense = {"pos": torch.randn(2, 4, 3, dtype=torch.float64), "rotation": first.float()}
    out = apply_rigid_motion(dense, POINT_CLOUD_FIELDS, second)
    assert out["rotation"].dtype == torch.float32
    assert torch.equal(out["rotation"], (second @ first.float().double()).float())  # R P, in float64, rounded once
    assert POINT_CLOUD_FIELDS["rotation"] == "record" and "rotation" in POINT_CLOUD_FIELDS.moving()
    from torch_geometric.data import Batch, Data

    graphs = Batch.from_data_list([Data(pos=torch.randn(3, 3, dtype=torch.float64), frame=first[i:i + 1])
                                   for i in range(2)])
    moved = apply_rigid_motion(graphs, FieldSpec(points=("pos",), record=("frame",)), second)
    assert torch.equal(moved.frame, second @ first)
    with pytest.raises(ValueError, match=r"batch\['frame'\] \(record\) must have shape"):
        apply_rigid_motion({"pos": dense["pos"], "frame": torch.zeros(2, 4, 3)}, FieldSpec(record=("frame",)), second)

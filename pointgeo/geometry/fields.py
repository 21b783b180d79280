"""What each field of a sample does under a rigid motion, declared once, and the one function that applies it.

Every dataset declares the kind of each of its fields in a :class:`FieldSpec`:

* ``points``: positions; rotate and translate, ``x ↦ x Rᵀ + t``;
* ``vectors``: directions and vector labels (normals, forces); rotate only, ``v ↦ v Rᵀ``;
* ``lattice``: periodic cells whose **rows** are the lattice vectors ``(a, b, c)``; rotate only, ``L ↦ L Rᵀ``.
  Fractional coordinates ``f = x L⁻¹`` are then unchanged (``x Rᵀ (L Rᵀ)⁻¹ = x L⁻¹``): they are ``invariant``;
* ``record``: the record of the rotation applied so far, ``(B, 3, 3)`` (the dense batches' ``rotation``); a further
  rotation ``R`` composes with it, ``P ↦ R P``;
* ``invariant``: everything a rigid motion leaves alone (energy, charge, spin, labels, fractional coordinates).

:func:`apply_rigid_motion` is the only place in pointgeo that decides which keys of a batch move. It takes one
rotation ``R (B, 3, 3)`` and translation ``t (B, 3)`` per sample and handles both batch structures of
``ARCHITECTURE.md``:

* dense dict batches of fixed-size clouds: ``pos (B, N, 3)``, ``normal (B, N, 3)`` (also one unbatched sample,
  ``pos (N, 3)`` with ``R (3, 3)``, ``t (3,)``);
* torch-geometric ``Batch``/``Data`` of variable-size samples: per-node fields ``(N_total, 3)`` take the motion of
  their sample through ``batch.batch``; per-graph lattices ``cell (B, 3, 3)`` take their sample's rotation.

The row-vector convention is that of :func:`pointgeo.geometry.rotate`. Arithmetic is done in the wider of the
field's and the motion's dtypes and the result is cast back to the field's dtype, so float64 inputs are moved in
float64 and float32 clouds rotated by float64 matrices are rounded once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from pointgeo.geometry.rigid import rigid_matrix

FieldKind = Literal["points", "vectors", "lattice", "invariant", "record"]
FIELD_KINDS: tuple[FieldKind, ...] = ("points", "vectors", "lattice", "invariant", "record")

B = TypeVar("B")


def _names(kind: str, keys: Iterable[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise TypeError(f"FieldSpec {kind} must be a tuple of key names, not the string {keys!r} (write ({keys!r},))")
    names = tuple(keys)
    for key in names:
        if not isinstance(key, str) or not key:
            raise TypeError(f"FieldSpec {kind} must hold non-empty key names; got {key!r}")
    return names


@dataclass(frozen=True)
class FieldSpec(Mapping[str, FieldKind]):
    """A frozen mapping ``key -> kind`` declaring how each field of a dataset's samples moves.

    Example: ``FieldSpec(points=("pos",), vectors=("forces",), lattice=("cell",), invariant=("energy",))``.

    Keys absent from a batch are skipped by :func:`apply_rigid_motion` (a declaration lists every field a dataset
    *can* carry, e.g. ``normal`` only when normals are used); keys present in a batch but not declared are left
    unchanged, exactly like ``invariant`` ones.

    Raises:
        ValueError: a key is declared under two kinds.
    """

    points: tuple[str, ...] = ()
    vectors: tuple[str, ...] = ()
    lattice: tuple[str, ...] = ()
    invariant: tuple[str, ...] = ()
    record: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for kind in FIELD_KINDS:
            names = _names(kind, getattr(self, kind))
            object.__setattr__(self, kind, names)
            for key in names:
                if key in seen:
                    raise ValueError(f"FieldSpec: key {key!r} is declared both as {seen[key]} and as {kind}")
                seen[key] = kind

    def __getitem__(self, key: str) -> FieldKind:
        for kind in FIELD_KINDS:
            if key in getattr(self, kind):
                return kind
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for kind in FIELD_KINDS:
            yield from getattr(self, kind)

    def __len__(self) -> int:
        return sum(len(getattr(self, kind)) for kind in FIELD_KINDS)

    def moving(self) -> tuple[str, ...]:
        """The keys a rigid motion changes (``points``, ``vectors``, ``lattice``, ``record``)."""
        return self.points + self.vectors + self.lattice + self.record

    def merged(self, other: FieldSpec) -> FieldSpec:
        """This declaration plus ``other``'s (a key declared by both under different kinds raises)."""
        return FieldSpec(*(getattr(self, k) + tuple(x for x in getattr(other, k) if x not in getattr(self, k))
                           for k in FIELD_KINDS))


def _check_motion(rotation: Tensor, translation: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if not isinstance(rotation, Tensor) or not rotation.is_floating_point() or rotation.shape[-2:] != (3, 3):
        shape = tuple(rotation.shape) if isinstance(rotation, Tensor) else type(rotation).__name__
        raise ValueError(f"rotation must be a floating-point tensor of shape (B, 3, 3) or (3, 3); got {shape}")
    if rotation.dim() not in (2, 3):
        raise ValueError(f"rotation must have shape (B, 3, 3) or (3, 3); got {tuple(rotation.shape)}")
    if translation is not None:
        if not isinstance(translation, Tensor) or translation.shape != rotation.shape[:-1]:
            shape = tuple(translation.shape) if isinstance(translation, Tensor) else type(translation).__name__
            raise ValueError(f"translation must have shape {tuple(rotation.shape[:-1])} to match rotation "
                             f"{tuple(rotation.shape)}; got {shape}")
    return rotation, translation


def _move(x: Tensor, rotation: Tensor, translation: Tensor | None) -> Tensor:
    """``x @ Rᵀ (+ t)`` in the wider dtype, cast back; ``rotation`` and ``translation`` broadcast against ``x``."""
    work = torch.promote_types(x.dtype, rotation.dtype)
    out = x.to(work) @ rotation.to(device=x.device, dtype=work).transpose(-1, -2)
    if translation is not None:
        out = out + translation.to(device=x.device, dtype=work).unsqueeze(-2)
    return out.to(x.dtype)


def _compose(record: Tensor, rotation: Tensor) -> Tensor:
    """``R @ P`` in the wider dtype, cast back to ``P``'s: the record of a rotation followed by ``rotation``."""
    work = torch.promote_types(record.dtype, rotation.dtype)
    return (rotation.to(device=record.device, dtype=work) @ record.to(work)).to(record.dtype)


def _check_field(key: str, value: object, kind: str, expected: str, ok: bool) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(f"batch[{key!r}] is declared as {kind} and must be a floating-point tensor; got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")
    if not ok:
        raise ValueError(f"batch[{key!r}] ({kind}) must have shape {expected}; got {tuple(value.shape)}")
    return value


def _graph_batch(batch, fields: FieldSpec, rotation: Tensor, translation: Tensor | None):
    num_graphs = int(getattr(batch, "num_graphs", 1) or 1)
    if rotation.dim() == 2:
        rotation = rotation.unsqueeze(0)
        translation = None if translation is None else translation.unsqueeze(0)
    if rotation.shape[0] != num_graphs:
        raise ValueError(f"rotation holds {rotation.shape[0]} motions but the batch has {num_graphs} graphs")
    index = getattr(batch, "batch", None)
    out = copy.copy(batch)  # a shallow copy: unchanged fields are shared, moved ones replaced
    for kind, keys in (("points", fields.points), ("vectors", fields.vectors)):
        for key in keys:
            if key not in batch:
                continue
            x = batch[key]
            n = x.shape[0] if isinstance(x, Tensor) else 0
            x = _check_field(key, x, kind, "(N, 3)", isinstance(x, Tensor) and x.dim() == 2 and x.shape[-1] == 3)
            node_graph = index if index is not None else torch.zeros(n, dtype=torch.long, device=x.device)
            if node_graph.shape != (n,):
                raise ValueError(f"batch[{key!r}] has {n} rows but batch.batch has {tuple(node_graph.shape)}")
            rot = rotation.to(x.device)[node_graph]  # (N, 3, 3), each node the rotation of its graph
            shift = translation.to(x.device)[node_graph] if kind == "points" and translation is not None else None
            out[key] = _move(x.unsqueeze(-2), rot, shift).squeeze(-2)
    for kind in ("lattice", "record"):
        for key in getattr(fields, kind):
            if key not in batch:
                continue
            cell = batch[key]
            cell = _check_field(key, cell, kind, f"({num_graphs}, 3, 3)",
                                isinstance(cell, Tensor) and tuple(cell.shape) == (num_graphs, 3, 3))
            out[key] = _move(cell, rotation, None) if kind == "lattice" else _compose(cell, rotation)
    return out


def _dense_batch(batch: Mapping, fields: FieldSpec, rotation: Tensor, translation: Tensor | None) -> dict:
    lead = tuple(rotation.shape[:-2])
    out = dict(batch)
    for kind in ("points", "vectors", "lattice", "record"):
        square = kind in ("lattice", "record")
        for key in getattr(fields, kind):
            if key not in batch:
                continue
            x = batch[key]
            shaped = isinstance(x, Tensor) and x.dim() == len(lead) + 2 and tuple(x.shape[: len(lead)]) == lead \
                and x.shape[-1] == 3 and (not square or x.shape[-2] == 3)
            x = _check_field(key, x, kind, str(lead + ((3, 3) if square else ("N", 3))).replace("'", ""), shaped)
            out[key] = _compose(x, rotation) if kind == "record" else \
                _move(x, rotation, translation if kind == "points" else None)
    return out


def apply_rigid_motion(batch: B, fields: FieldSpec, rotation: Tensor, translation: Tensor | None = None) -> B:
    """Apply one rigid motion per sample to every field of ``batch`` by its declared kind; returns a new batch.

    ``points`` become ``x Rᵀ + t``, ``vectors`` become ``v Rᵀ``, ``lattice`` cells ``L Rᵀ`` (rows are lattice
    vectors), a ``record`` of the rotation applied so far ``R P``; ``invariant`` and undeclared keys are passed
    through unchanged (the same tensors). The input batch is not modified.

    Args:
        batch: a dense dict batch (``pos (B, N, 3)``; or one sample ``(N, 3)`` with ``rotation (3, 3)``) or a
            torch-geometric ``Batch`` (per-node fields ``(N_total, 3)`` grouped by ``batch.batch``, per-graph
            lattices ``(B, 3, 3)``); a single ``Data`` counts as one graph.
        fields: the dataset's declaration.
        rotation: ``(B, 3, 3)`` rotation matrices (``(3, 3)`` for one sample). Not checked for orthogonality, so
            the same call applies any linear map.
        translation: ``(B, 3)`` (``(3,)``) translations of the ``points``; ``None``: no translation.

    Returns:
        A batch of the same type: a new ``dict``, or a shallow copy of the ``Batch``/``Data``.

    Raises:
        TypeError: ``fields`` is not a :class:`FieldSpec`, or a declared field is not a floating-point tensor.
        ValueError: a declared field, the rotation or the translation has the wrong shape.
    """
    if not isinstance(fields, FieldSpec):
        raise TypeError(f"fields must be a pointgeo.geometry.FieldSpec; got {type(fields).__name__}")
    rotation, translation = _check_motion(rotation, translation)
    from torch_geometric.data import Data  # noqa: PLC0415  (Batch subclasses Data; imported lazily)

    if isinstance(batch, Data):
        return _graph_batch(batch, fields, rotation, translation)
    if isinstance(batch, Mapping):
        return _dense_batch(batch, fields, rotation, translation)  # type: ignore[return-value]
    raise TypeError(f"batch must be a dict of tensors or a torch_geometric Data/Batch; got {type(batch).__name__}")


POINT_CLOUD_FIELDS = FieldSpec(points=("pos",), vectors=("normal",),
                               invariant=("label", "seg", "category", "index", "mask", "instance"),
                               record=("rotation",))
"""The declaration of the dense point-cloud batches (``ARCHITECTURE.md``, "Data in flight"): positions rotate and
translate, normals rotate, ``rotation`` records the rotation applied (a datamodule starts it at the identity)."""

MOLECULE_FIELDS = FieldSpec(points=("pos",), vectors=("forces",), lattice=("cell",),
                            invariant=("z", "charge", "spin", "energy", "energy_reference", "natoms", "index",
                                       "pbc", "data_id"))
"""The declaration of molecule and crystal graphs: positions rotate and translate, forces rotate, cells rotate
their rows, everything else is invariant."""


@dataclass(frozen=True)
class PairFieldSpec:
    """The declaration of a sample made of two clouds that move **independently** (a registration pair).

    ``source`` and ``target`` declare each cloud's fields (a :class:`FieldSpec` each); ``transforms`` are rigid maps
    ``(…, 4, 4)`` from the source frame into the target frame (the ground-truth pose), which become
    ``M_tgt · T · M_src⁻¹`` when the source moves by ``M_src`` and the target by ``M_tgt``; ``invariant`` keys are
    left alone. :func:`apply_pair_motion` applies it.

    Raises:
        ValueError: a key is declared twice (in one side, across the sides, or as a transform/invariant too).
    """

    source: FieldSpec
    target: FieldSpec
    transforms: tuple[str, ...] = ()
    invariant: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for side in ("source", "target"):
            if not isinstance(getattr(self, side), FieldSpec):
                raise TypeError(f"PairFieldSpec {side} must be a FieldSpec; got {type(getattr(self, side)).__name__}")
        object.__setattr__(self, "transforms", _names("transforms", self.transforms))
        object.__setattr__(self, "invariant", _names("invariant", self.invariant))
        seen: dict[str, str] = {}
        groups = (("source", tuple(self.source)), ("target", tuple(self.target)), ("transforms", self.transforms),
                  ("invariant", self.invariant))
        for group, keys in groups:
            for key in keys:
                if key in seen:
                    raise ValueError(f"PairFieldSpec: key {key!r} is declared in {seen[key]} and in {group}")
                seen[key] = group


def _pair_side(batch, spec: FieldSpec, rotation: Tensor, translation: Tensor | None):
    """Move one side of a pair; torch-geometric batches group each cloud's rows by ``<key>_batch`` (PyG's
    ``follow_batch``), a lone ``Data`` is one pair."""
    from torch_geometric.data import Data  # noqa: PLC0415

    if not isinstance(batch, Data):
        return _dense_batch(batch, spec, rotation, translation)
    rot = rotation if rotation.dim() == 3 else rotation.unsqueeze(0)
    shift = None if translation is None else (translation if translation.dim() == 2 else translation.unsqueeze(0))
    out = copy.copy(batch)
    for kind, keys in (("points", spec.points), ("vectors", spec.vectors)):
        for key in keys:
            if key not in batch:
                continue
            x = batch[key]
            x = _check_field(key, x, kind, "(N, 3)", isinstance(x, Tensor) and x.dim() == 2 and x.shape[-1] == 3)
            owner = batch[f"{key}_batch"] if f"{key}_batch" in batch else torch.zeros(
                len(x), dtype=torch.long, device=x.device)
            if owner.shape != (len(x),) or (len(owner) and int(owner.max()) >= rot.shape[0]):
                raise ValueError(f"batch[{key!r}_batch] must give each of the {len(x)} rows one of the "
                                 f"{rot.shape[0]} motions")
            moved_shift = shift.to(x.device)[owner] if kind == "points" and shift is not None else None
            out[key] = _move(x.unsqueeze(-2), rot.to(x.device)[owner], moved_shift).squeeze(-2)
    return out


def apply_pair_motion(batch: B, fields: PairFieldSpec, *, source: tuple[Tensor, Tensor | None] | None = None,
                      target: tuple[Tensor, Tensor | None] | None = None) -> B:
    """Move the source cloud by ``source = (R₁, t₁)`` and the target cloud by ``target = (R₂, t₂)``, each
    ``R (B, 3, 3)`` / ``t (B, 3)`` (or ``(3, 3)`` / ``(3,)`` for one pair; ``t`` may be ``None``; a side given as
    ``None`` stays put), and update every declared transform ``T ↦ [R₂|t₂] · T · [R₁|t₁]⁻¹``, so that it still maps
    the (moved) source onto the (moved) target. Returns a new batch (dict, or a shallow copy of a ``Data``/``Batch``).

    Raises:
        TypeError: ``fields`` is not a :class:`PairFieldSpec`, or a declared field is not a floating-point tensor.
        ValueError: wrong shapes (fields, motions, transforms ``(…, 4, 4)``).
    """
    if not isinstance(fields, PairFieldSpec):
        raise TypeError(f"fields must be a pointgeo.geometry.PairFieldSpec; got {type(fields).__name__}")
    out = dict(batch) if isinstance(batch, Mapping) else copy.copy(batch)
    moves = {}
    for name, spec, motion in (("source", fields.source, source), ("target", fields.target, target)):
        if motion is None:
            continue
        rotation, translation = _check_motion(*motion)
        out = _pair_side(out, spec, rotation, translation)
        moves[name] = rigid_matrix(rotation.double(), None if translation is None else translation.double())
    for key in fields.transforms:
        if key not in batch or not moves:
            continue
        value = batch[key]
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.shape[-2:] != (4, 4):
            raise ValueError(f"batch[{key!r}] is declared as a transform and must have shape (..., 4, 4); got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
        work = value.double()
        if "source" in moves:
            m = moves["source"].to(value.device)
            rot_t = m[..., :3, :3].transpose(-1, -2)
            work = work @ rigid_matrix(rot_t, -(rot_t @ m[..., :3, 3:4]).squeeze(-1))
        if "target" in moves:
            work = moves["target"].to(value.device) @ work
        if work.shape != value.shape:
            raise ValueError(f"batch[{key!r}] has shape {tuple(value.shape)}, which does not match the motions' "
                             f"batch shape")
        out[key] = work.to(value.dtype)
    return out


FRAGMENT_PAIR_FIELDS = PairFieldSpec(
    source=FieldSpec(points=("src_pos",), vectors=("src_normal",)),
    target=FieldSpec(points=("tgt_pos",), vectors=("tgt_normal",)),
    transforms=("transform",),
    invariant=("overlap", "index", "scene", "src_id", "tgt_id", "src_motion", "tgt_motion"),
)
"""The declaration of registration pairs (``pointgeo.datamodules.threedmatch``): the source cloud ``src_pos``
(``src_normal``) and the target cloud ``tgt_pos`` (``tgt_normal``) move independently; ``transform`` maps source into
target; ``src_motion``/``tgt_motion`` record the motions the datamodule applied (``invariant``: records)."""
CRYSTAL_FIELDS = FieldSpec(lattice=("cell",),
                           invariant=("frac_coords", "z", "natoms", "lengths", "angles", "y", "index"))
"""The declaration of crystal graphs (``pointgeo.datamodules.crystals``): a rotation turns the cell's rows and
nothing else. Fractional coordinates are invariant (``x Rᵀ (L Rᵀ)⁻¹ = x L⁻¹``), and so are the lattice parameters,
the atom types and the properties; Cartesian positions are derived, ``frac_coords @ cell``, never stored."""

"""Exactly one place decides which keys of a batch move under a rigid motion: the field declarations
(:class:`pointgeo.geometry.FieldSpec`, :data:`~pointgeo.geometry.POINT_CLOUD_FIELDS`,
:data:`~pointgeo.geometry.MOLECULE_FIELDS`) applied by :func:`pointgeo.geometry.apply_rigid_motion`.

Checked with ``ast`` on the source of every module outside ``pointgeo.geometry`` (as ``tests/test_layers.py`` reads
them): no module rotates by hand — no ``rotate`` imported from ``pointgeo.geometry``, no matrix product with a
rotation, no field the declarations move (``pos``, ``normal``, ``forces``, ``cell``, ASE's ``positions``) assigned
a matrix product. The checker itself is tested on the hand rotations the consumers used to make."""

from __future__ import annotations

import ast
import re

import pytest

from pointgeo.geometry import MOLECULE_FIELDS, POINT_CLOUD_FIELDS
from test_layers import read_sources

MOVING_KEYS = frozenset(POINT_CLOUD_FIELDS.moving() + MOLECULE_FIELDS.moving() + ("positions",))
"""The keys the declarations move, and the name ASE gives positions."""
ROTATION_NAME = re.compile(r"(^|_)(rot|rots|rotation|rotations|tilt)($|_)", re.IGNORECASE)
"""A name that holds a rotation (``rot``, ``rotation``, ``sample_rotation`` ...)."""
PRODUCTS = frozenset({"matmul", "bmm", "einsum", "rotate"})
"""Calls that apply a matrix (besides ``@``)."""
ALLOWED = {
    # PaRot's disentangler sees every patch under its own random rotations inside the network's siamese pass and
    # maps the predicted directions back (d ≈ d_rot R): the network's internal views, not fields of a batch.
    ("pointgeo.nn.parot", "imports rotate"),
    ("pointgeo.nn.parot", "a matrix product with rotations"),
    # The OMol25-like generator builds a new structure: the second fragment of a dimer in a random orientation
    # (NumPy, ASE Atoms), before any sample exists.
    ("pointgeo.datamodules.xtb_generate", "a matrix product with _random_rotation"),
    ("pointgeo.datamodules.xtb_generate", "'positions' assigned a matrix product"),
    # The stress is the derivative of the energy under a strain x ↦ x (I + ε) of positions and cell: a deformation,
    # not a rigid motion (vector fields would not transform like positions under it).
    ("pointgeo.tasks.potential", "'cell' assigned a matrix product"),
}
"""``(module, what)`` allowed to multiply by hand, each with its reason."""


def _is_product(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name in PRODUCTS
    return False


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _moving_key(target: ast.AST) -> str | None:
    if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant) and \
            target.slice.value in MOVING_KEYS:
        return target.slice.value
    if isinstance(target, ast.Attribute) and target.attr in MOVING_KEYS:
        return target.attr
    return None


def hand_rotations(source: str) -> list[str]:
    """Where ``source`` rotates by hand: ``line: what``."""
    found: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pointgeo.geometry"):
            found += [f"{node.lineno}: imports rotate" for alias in node.names if alias.name == "rotate"]
        if _is_product(node):
            rotations = sorted(n for n in _names(node) if ROTATION_NAME.search(n))
            if rotations:
                found.append(f"{node.lineno}: a matrix product with {', '.join(rotations)}")
        pairs: list[tuple[str | None, ast.AST]] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in target.elts if isinstance(target, ast.Tuple) else [target]:
                    pairs.append((_moving_key(part), node.value))
        elif isinstance(node, ast.Call):
            pairs += [(k.arg if k.arg in MOVING_KEYS else None, k.value) for k in node.keywords]
        elif isinstance(node, ast.Dict):
            pairs += [(k.value if isinstance(k, ast.Constant) and k.value in MOVING_KEYS else None, v)
                      for k, v in zip(node.keys, node.values)]
        for key, value in pairs:
            if key is not None and any(_is_product(n) for n in ast.walk(value)):
                found.append(f"{node.lineno}: {key!r} assigned a matrix product")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def _consumers() -> dict[str, str]:
    return {module: source for module, (source, _) in read_sources().items()
            if not (module == "pointgeo.geometry" or module.startswith("pointgeo.geometry."))}


@pytest.mark.parametrize("snippet", [
    "from pointgeo.geometry import angle_sweep, rotate\n",  # the robustness runner's own rotation of pos/normal
    "out[key] = (x.unsqueeze(1) @ rot[index].transpose(-1, -2)).squeeze(1)\n",  # the potential harness
    "expected = (expected.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)\nr = rotation.reshape(3, 3)\n"
    "y = torch.matmul(z, rotation)\n",
    "copy.cell = cell.double() @ sym\n",
    "Data(pos=x @ m.T)\n",
    "batch = {'normal': normal @ tilt.T}\n",
    "second.positions = second.positions @ q.T\n",
])
def test_the_checker_finds_hand_rotations(snippet: str) -> None:
    assert hand_rotations(snippet)


def test_the_checker_passes_declared_motions() -> None:
    source = ("moved = apply_rigid_motion(batch, POINT_CLOUD_FIELDS, rotation, shift)\n"
              "out['pos'] = moved['pos'].float()\nweights = x @ w.T\n")
    assert hand_rotations(source) == []


def test_only_the_declarations_move_fields() -> None:
    sources = _consumers()
    assert len(sources) > 50 and "pointgeo.robustness.protocol" in sources and "pointgeo.viz.molecules" in sources
    found = {(module, hit.split(": ", 1)[1]): hit.split(":")[0] for module, source in sorted(sources.items())
             for hit in hand_rotations(source)}
    assert sorted(set(found) - ALLOWED) == [], {k: f"line {v}" for k, v in found.items() if k not in ALLOWED}
    assert sorted(ALLOWED - set(found)) == []  # an allowance that is no longer needed goes

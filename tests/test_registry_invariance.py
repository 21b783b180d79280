"""Every registered network is checked by the shared harness for exactly what it declares.

* ``invariant``: on every shape class of :data:`pointgeo.testing.SHAPE_CLASSES` that the entry does not exclude
  (random clouds; exactly axisymmetric grids; the 1 : 1.001 : 2 box; mirrored and threefold composites; scales
  1e-3 and 1e3 and an offset of 1e3 sizes; the real ModelNet40 samples of symmetric classes), each under 32 random
  rotations, translations and permutations: max |Δ| ≤ 1e-8 (float64) and 1e-3 (float32) times
  ``max(1, max |logit|)``, and the outputs must react to a non-rigid change of the input. A class an entry excludes
  (``not_guaranteed``, or ``float64_only`` for float32, with the reason) is measured and must really fail.
* every network: a sample's output does not depend on its batch-mates (eval mode), and a state_dict round trip
  reproduces the outputs.
The harness itself can fail: plain PointNet (rotations), a constant network (no sensitivity) and a rotation
invariant but order-dependent network (permutations) are each shown to fail.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from pointgeo.registry import create_model, get_model_entry, list_models
from pointgeo.testing import (
    ADVERSARIAL_SHAPES,
    assert_invariant,
    check_declared_shapes,
    guaranteed_shapes,
    measure,
    modelnet40_symmetric,
)

ALL = list_models(task="classification") + list_models(task="segmentation")  # potentials: test_potentials
INVARIANT = [n for n in ALL if get_model_entry(n).invariance == "invariant"]
DTYPES = {"float64": torch.float64, "float32": torch.float32}
TRIALS = {torch.float64: 32, torch.float32: 8}
"""Transforms per sample with the network's default input (normals given to RISurConv, coordinates only to TinvNN);
the other input is checked with 4."""
REAL = "modelnet40_symmetric"


def build(name: str, dtype: torch.dtype, use_normals: bool) -> tuple[torch.nn.Module, int]:
    entry = get_model_entry(name)
    kwargs = dict(entry.test_kwargs)
    if entry.task == "segmentation":
        kwargs.setdefault("num_parts", 6)
        kwargs.setdefault("num_categories", 2)
    else:
        kwargs.setdefault("num_classes", 5)
    torch.manual_seed(0)
    net = create_model(name, use_normals=use_normals, **kwargs).to(dtype).eval()
    return net, entry.test_num_points


def extra_inputs(name: str, batch: int) -> tuple[torch.Tensor, ...]:
    return (torch.arange(batch) % 2,) if get_model_entry(name).task == "segmentation" else ()


def random_clouds(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(3, n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.7, 0.4], dtype=torch.float64)
    return pos, torch.nn.functional.normalize(torch.randn(3, n, 3, generator=g, dtype=torch.float64), dim=-1)


def shape_cloud(shape: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos, normal = ADVERSARIAL_SHAPES[shape](n, 0)
    return pos[None], normal[None]


def run(name: str, dtype: torch.dtype, pos: torch.Tensor, normal: torch.Tensor, trials: int | None = None) -> list:
    """Reports with and without the normals (the networks that read none estimate or ignore them): ``trials``
    (default :data:`TRIALS`) transforms with the network's default input, 4 with the other."""
    default = inspect.signature(get_model_entry(name).builder).parameters["use_normals"].default
    reports = []
    for use_normals in (True, False):
        net, _ = build(name, dtype, use_normals)
        count = (trials or TRIALS[dtype]) if use_normals == default else 4
        reports.append(measure(net, pos.to(dtype), normal.to(dtype) if use_normals else None,
                               *extra_inputs(name, pos.shape[0]), trials=count))
    return reports


@pytest.fixture(scope="module")
def real_samples(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric-class ModelNet40 samples, the first 128 points of each: ``pos, normal (B, 128, 3)``."""
    samples = modelnet40_symmetric(shared_data / "modelnet40" / "modelnet40_normal_resampled", 128)
    return torch.stack([s[1] for s in samples]), torch.stack([s[2] for s in samples])


def test_every_declaration_names_a_known_shape_class_with_a_reason() -> None:
    for name in ALL:
        entry = get_model_entry(name)
        check_declared_shapes(name, entry.not_guaranteed)
        check_declared_shapes(name, entry.float64_only)
    with pytest.raises(ValueError, match="unknown shape classes"):
        check_declared_shapes("x", {"no_such_shape": "why"})


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", INVARIANT)
def test_invariant_networks_pass_the_harness_on_every_guaranteed_shape(name: str, dtype: torch.dtype) -> None:
    entry = get_model_entry(name)
    n = entry.test_num_points
    failures = []
    classes = [s for s in guaranteed_shapes(entry.excluded_shapes(dtype)) if s != REAL]
    for shape, (pos, normal) in [("random", random_clouds(n)), *((s, shape_cloud(s, n)) for s in classes)]:
        for report in run(name, dtype, pos, normal):
            if not report.within():
                failures.append(f"{shape}: {report}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", INVARIANT)
def test_invariant_networks_on_the_real_symmetric_modelnet40_samples(name: str, dtype: torch.dtype,
                                                                     real_samples: tuple) -> None:
    pos, normal = real_samples
    n = max(get_model_entry(name).test_num_points, 64)
    reports = run(name, dtype, pos[:, :n], normal[:, :n], trials=8 if dtype == torch.float64 else 4)
    if REAL in get_model_entry(name).excluded_shapes(dtype):
        assert not all(r.within() for r in reports), f"{name} passes on {REAL} in {dtype}: declare it guaranteed"
    else:
        assert all(r.within() for r in reports), "\n".join(map(str, reports))


@pytest.mark.parametrize(("name", "dtype"), [
    pytest.param(n, d, id=f"{n}-{str(d)[6:]}")
    for n in INVARIANT for d in DTYPES.values() if set(get_model_entry(n).excluded_shapes(d)) - {REAL}
])
def test_shapes_declared_outside_the_guarantee_really_fail(name: str, dtype: torch.dtype) -> None:
    n = get_model_entry(name).test_num_points
    for shape in set(get_model_entry(name).excluded_shapes(dtype)) - {REAL}:  # a shape that passes belongs back
        reports = run(name, dtype, *shape_cloud(shape, n))  # the harness's own transforms: pass there, or fail here
        assert not all(r.within() for r in reports), f"{name} passes on {shape} in {dtype}: declare it guaranteed"


@pytest.mark.parametrize("name", ALL)
def test_outputs_do_not_depend_on_batch_mates_and_survive_a_state_dict_round_trip(name: str) -> None:
    net, n = build(name, torch.float64, use_normals=False)
    pos, _ = random_clouds(n)
    extra = extra_inputs(name, 3)
    with torch.no_grad():
        full = net(pos, None, *extra)
        alone = torch.cat([net(pos[i : i + 1], None, *(e[i : i + 1] for e in extra)) for i in range(pos.shape[0])])
        assert torch.allclose(full, alone, rtol=0, atol=1e-10)
        clone, _ = build(name, torch.float64, use_normals=False)
        for p in clone.parameters():
            p.data.add_(1.0)  # make sure the round trip, not the seed, restores the weights
        clone.load_state_dict(net.state_dict())
        assert torch.equal(clone(pos, None, *extra), full)


def test_the_harness_fails_plain_pointnet() -> None:
    net, n = build("pointnet", torch.float64, use_normals=False)
    pos, _ = random_clouds(n)
    report = measure(net, pos)
    assert report.max_abs > 1e-4
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(net, pos)


def test_the_harness_fails_a_network_whose_output_does_not_depend_on_its_input() -> None:
    pos, _ = random_clouds(32)
    constant = lambda p, n: torch.ones(p.shape[0], 5, dtype=p.dtype)  # noqa: E731  (perfectly "invariant")
    report = measure(constant, pos)
    assert report.max_rel == 0 and report.sensitivity == 0
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(constant, pos)


def test_the_permutation_leg_fails_a_rotation_invariant_but_order_dependent_network() -> None:
    def first_points(p: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
        """Distances of the first five points to the centroid: rotation and translation invariant only."""
        return (p[:, :5] - p.mean(1, keepdim=True)).norm(dim=-1)

    pos, _ = random_clouds(32)
    assert measure(first_points, pos, permutations=False).within()
    report = measure(first_points, pos)
    assert report.max_rel > 1e-2
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(first_points, pos)


def test_the_registry_rejects_unknown_names_with_suggestions() -> None:
    with pytest.raises(KeyError, match="did you mean 'tinvnn_pointnet'"):
        create_model("tinvnn_pointnett")

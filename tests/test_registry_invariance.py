"""Every registered network is checked by the shared harness for exactly what it declares.

* ``invariant``: float64 max |Δlogit| ≤ 1e-8 and float32 ≤ 1e-3 relative, on random clouds and on the adversarial
  shapes, with and without normals, under random rotations, translations and permutations. A network may declare
  adversarial shapes outside its guarantee (``not_guaranteed``, or ``float64_only`` for float32, with the reason);
  those are measured and must really be outside it.
* every network: a sample's output does not depend on its batch-mates (eval mode), and a state_dict round trip
  reproduces the outputs.
The harness itself can fail: plain PointNet is shown not to be invariant.
"""

from __future__ import annotations

import pytest
import torch

from pointgeo.registry import create_model, get_model_entry, list_models
from pointgeo.testing import ADVERSARIAL_SHAPES, adversarial_batch, assert_invariant, measure

ALL = list_models(task="classification") + list_models(task="segmentation")  # potentials: test_potentials
INVARIANT = [n for n in ALL if get_model_entry(n).invariance == "invariant"]


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


def inputs(name: str, n: int, dtype: torch.dtype, adversarial: bool) -> tuple:
    if adversarial:
        _, pos, normal = adversarial_batch(n, get_model_entry(name).guaranteed_shapes(dtype))
    else:
        g = torch.Generator().manual_seed(1)
        pos = torch.randn(3, n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.7, 0.4], dtype=torch.float64)
        normal = torch.nn.functional.normalize(torch.randn(3, n, 3, generator=g, dtype=torch.float64), dim=-1)
    extra = ()
    if get_model_entry(name).task == "segmentation":
        extra = (torch.arange(pos.shape[0]) % 2,)
    return pos.to(dtype), normal.to(dtype), extra


@pytest.mark.parametrize("adversarial", [False, True], ids=["random", "adversarial"])
@pytest.mark.parametrize("use_normals", [False, True], ids=["xyz", "normals"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", INVARIANT)
def test_invariant_networks_pass_the_harness(name: str, dtype: torch.dtype, use_normals: bool, adversarial: bool) -> None:
    net, n = build(name, dtype, use_normals)
    pos, normal, extra = inputs(name, n, dtype, adversarial)
    assert_invariant(net, pos, normal if use_normals else None, *extra)  # 1e-8 abs (float64), 1e-3 rel (float32)


@pytest.mark.parametrize("name", ALL)
def test_outputs_do_not_depend_on_batch_mates_and_survive_a_state_dict_round_trip(name: str) -> None:
    net, n = build(name, torch.float64, use_normals=False)
    pos, _, extra = inputs(name, n, torch.float64, adversarial=False)
    with torch.no_grad():
        full = net(pos, None, *extra)
        alone = torch.cat([net(pos[i : i + 1], None, *(e[i : i + 1] for e in extra)) for i in range(pos.shape[0])])
        assert torch.allclose(full, alone, atol=1e-10)
        clone, _ = build(name, torch.float64, use_normals=False)
        for p in clone.parameters():
            p.data.add_(1.0)  # make sure the round trip, not the seed, restores the weights
        clone.load_state_dict(net.state_dict())
        assert torch.equal(clone(pos, None, *extra), full)


@pytest.mark.parametrize(("name", "dtype"), [
    pytest.param(n, d, id=f"{n}-{str(d)[6:]}")
    for n in INVARIANT for d in (torch.float64, torch.float32) if get_model_entry(n).excluded_shapes(d)
])
def test_shapes_declared_outside_the_guarantee_are_documented_and_really_outside(name: str,
                                                                                  dtype: torch.dtype) -> None:
    entry = get_model_entry(name)
    shapes = entry.excluded_shapes(dtype)
    assert set(shapes) <= set(ADVERSARIAL_SHAPES) and all(shapes.values())
    net, n = build(name, dtype, use_normals=True)
    extra = (torch.zeros(1, dtype=torch.long),) if entry.task == "segmentation" else ()
    for shape in shapes:  # a shape that passes belongs back in the guarantee
        _, pos, normal = adversarial_batch(n, [shape])
        report = measure(net, pos.to(dtype), normal.to(dtype), *extra)
        assert not report.within(), f"{name} passes on {shape} in {dtype} ({report}): declare it guaranteed"


def test_the_harness_fails_plain_pointnet() -> None:
    net, n = build("pointnet", torch.float64, use_normals=False)
    pos, _, _ = inputs("pointnet", n, torch.float64, adversarial=False)
    report = measure(net, pos)
    assert report.max_abs > 1e-4
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(net, pos)


def test_the_registry_rejects_unknown_names_with_suggestions() -> None:
    with pytest.raises(KeyError, match="did you mean 'tinvnn_pointnet'"):
        create_model("tinvnn_pointnett")

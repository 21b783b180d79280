"""The numerical DimeNet spherical basis equals torch-geometric's sympy-built ``SphericalBasisLayer``."""

from __future__ import annotations

import torch
from torch_geometric.nn.models.dimenet import SphericalBasisLayer

from pointgeo.nn.cdvae.basis import SphericalBasis, spherical_bessel_zeros


def test_zeros_are_zeros_of_the_spherical_bessel_functions() -> None:
    from scipy.special import spherical_jn

    zeros = spherical_bessel_zeros(4, 5)
    assert abs(zeros[0] - torch.arange(1, 6).numpy() * torch.pi).max() < 1e-12
    for order in range(4):
        assert abs(spherical_jn(order, zeros[order])).max() < 1e-10
        assert (zeros[order][1:] > zeros[order][:-1]).all()


def test_equals_torch_geometric_spherical_basis() -> None:
    g = torch.Generator().manual_seed(0)
    dist = 0.2 + 4.7 * torch.rand(40, generator=g, dtype=torch.float64)
    angle = torch.pi * torch.rand(150, generator=g, dtype=torch.float64)
    idx = torch.randint(40, (150,), generator=g)
    ours = SphericalBasis(3, 4, 5.0)(dist, angle, idx)
    reference = SphericalBasisLayer(3, 4, 5.0)(dist, angle, idx)
    assert ours.shape == reference.shape == (150, 12)
    # torch-geometric rounds its Bessel zeros to float32: agreement to that precision
    assert torch.allclose(ours, reference, rtol=0, atol=1e-6 * float(reference.abs().max()))

"""DimeNet's 2-D spherical basis (Gasteiger et al., ICLR 2020, eq. 6), evaluated numerically.

``a_ln(d, θ) = u(d/c) · N_ln j_l(z_ln d / c) · Y_l^0(θ)`` for ``l < L`` (``num_spherical``), ``n < K``
(``num_radial``): ``j_l`` the spherical Bessel functions, ``z_ln`` the ``n``-th positive zero of ``j_l``,
``N_ln = (½ j_{l+1}(z_ln)²)^{-1/2}``, ``Y_l^0(θ) = √((2l + 1)/4π) P_l(cos θ)`` and ``u`` DimeNet's polynomial
envelope. The values equal torch-geometric's ``SphericalBasisLayer``, which builds the same functions with sympy
(minutes per layer on a loaded CPU); here ``j_l`` and ``P_l`` come from their three-term recurrences and the zeros
from scipy once per layer (``scipy`` imported inside the constructor).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn.models.dimenet import Envelope


def spherical_bessel_zeros(num_spherical: int, num_radial: int) -> np.ndarray:
    """``(L, K)`` the first ``K`` positive zeros of ``j_0 … j_{L−1}``, found between the interlacing zeros of the
    previous order (``j_0``'s are ``nπ``)."""
    from scipy.optimize import brentq  # noqa: PLC0415
    from scipy.special import spherical_jn  # noqa: PLC0415

    zeros = np.zeros((num_spherical, num_radial))
    points = np.arange(1, num_radial + num_spherical) * np.pi
    zeros[0] = points[:num_radial]
    for order in range(1, num_spherical):
        points = np.array([brentq(lambda x, o=order: spherical_jn(o, x), points[j], points[j + 1])
                           for j in range(len(points) - 1)])
        zeros[order] = points[:num_radial]
    return zeros


def spherical_jn(order: int, x: Tensor) -> Tensor:
    """``(L, ...)``: ``j_0(x) … j_{order}(x)`` by the upward recurrence ``j_{l+1} = (2l + 1)/x j_l − j_{l−1}``."""
    out = [torch.sin(x) / x]
    if order >= 1:
        out.append(torch.sin(x) / x.pow(2) - torch.cos(x) / x)
    for l in range(1, order):
        out.append((2 * l + 1) / x * out[l] - out[l - 1])
    return torch.stack(out[: order + 1])


def legendre(order: int, t: Tensor) -> Tensor:
    """``(L, ...)``: ``P_0(t) … P_{order}(t)`` by Bonnet's recurrence."""
    out = [torch.ones_like(t), t]
    for l in range(1, order):
        out.append(((2 * l + 1) * t * out[l] - l * out[l - 1]) / (l + 1))
    return torch.stack(out[: order + 1])


class SphericalBasis(nn.Module):
    """``(dist (E,), angle (T,), idx_kj (T,)) -> (T, L·K)``, ordered ``l``-major (torch-geometric's layout)."""

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float, envelope_exponent: int = 5) -> None:
        super().__init__()
        self.num_spherical, self.num_radial, self.cutoff = num_spherical, num_radial, float(cutoff)
        self.envelope = Envelope(envelope_exponent)
        zeros = spherical_bessel_zeros(num_spherical, num_radial)
        from scipy.special import spherical_jn as scipy_jn  # noqa: PLC0415

        norms = np.stack([1.0 / np.sqrt(0.5 * scipy_jn(order + 1, zeros[order]) ** 2)
                          for order in range(num_spherical)])
        self.register_buffer("zeros", torch.tensor(zeros, dtype=torch.float32), persistent=False)
        self.register_buffer("norms", torch.tensor(norms, dtype=torch.float32), persistent=False)
        prefactor = [math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(num_spherical)]
        self.register_buffer("prefactor", torch.tensor(prefactor, dtype=torch.float32), persistent=False)

    def forward(self, dist: Tensor, angle: Tensor, idx_kj: Tensor) -> Tensor:
        x = dist / self.cutoff  # (E,)
        zeros, norms = self.zeros.to(x.dtype), self.norms.to(x.dtype)
        arg = zeros.unsqueeze(-1) * x  # (L, K, E)
        bessel = spherical_jn(self.num_spherical - 1, arg)  # (L', L, K, E): order l' of every zero
        index = torch.arange(self.num_spherical, device=x.device)
        rbf = bessel[index, index] * norms.unsqueeze(-1)  # (L, K, E): j_l(z_ln x)
        rbf = (self.envelope(x) * rbf).permute(2, 0, 1)  # (E, L, K)
        cbf = legendre(self.num_spherical - 1, torch.cos(angle)).T * self.prefactor.to(x.dtype)  # (T, L)
        return (rbf[idx_kj] * cbf.unsqueeze(-1)).reshape(-1, self.num_spherical * self.num_radial)

"""CDVAE (Xie, Fu, Ganea, Barzilay, Jaakkola, ICLR 2022) assembled: encoder, latent and property heads, number of
atoms / lattice / composition heads, the equivariant score decoder, the noise schedules and the training scalers.

Call convention of the registry's ``crystal_generation`` kind (all tensors of a batch of ``B`` crystals with ``N``
atoms in all; ``batch (N,)`` the crystal of each atom, non-decreasing; cells ``(B, 3, 3)`` with rows = lattice
vectors):

* ``net.encode(frac_coords (N, 3), atom_types (N,), cell, batch) -> (μ (B, D), log σ² (B, D))``, invariant;
* ``net.heads(z (B, D)) -> {"num_atoms" (B, max_atoms + 1), "lattice" (B, 6), "composition" (B, max_z)[,
  "property" (B, P)]}``, invariant (functions of ``z``);
* ``net.decode(z, pos (N, 3) Cartesian, atom_types (N,), cell, batch) -> (score (N, 3), type_logits (N, max_z))``,
  the score equivariant (``ŝ(X Rᵀ, L Rᵀ) = ŝ(X, L) Rᵀ``) and the logits invariant.

The scalers of the training set (:class:`pointgeo.datamodules.crystals.StandardScaler` of the lattice target and of
the properties) are buffers of the network (:meth:`CDVAE.set_scalers`), so a checkpoint alone can generate.
Deviations from CDVAE's code: the decoder (:mod:`pointgeo.nn.cdvae.decoder`: PaiNN-style on the given cell, not
GemNet-T on a canonical one), the graphs (every periodic image within the cutoff, nearest neighbours with ties kept,
not 27 images), and the encoder's graph (the same radius graph, not pymatgen's CrystalNN bonds).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pointgeo.nn.cdvae.decoder import EquivariantScoreDecoder
from pointgeo.nn.cdvae.encoder import PeriodicDimeNetPP
from pointgeo.nn.cdvae.heads import LatentHead, LatentHeads
from pointgeo.nn.cdvae.inputs import check_crystals
from pointgeo.nn.cdvae.noise import NoiseSchedule
from pointgeo.registry import register_model


class CDVAE(nn.Module):
    """The CDVAE networks (module docstring).

    Args:
        latent_dim: ``D`` (CDVAE: 256).
        max_atoms: the largest crystal (the number-of-atoms head predicts ``0..max_atoms``).
        max_z: atomic numbers ``1..max_z`` (CDVAE: 100).
        num_properties: outputs of the property head (0: none; CDVAE's ``predict_property`` gives 1).
        hidden_dim, fc_num_layers: the heads' MLPs (CDVAE: 256, 1).
        encoder: keyword arguments of :class:`~pointgeo.nn.cdvae.encoder.PeriodicDimeNetPP`.
        decoder: keyword arguments of :class:`~pointgeo.nn.cdvae.decoder.EquivariantScoreDecoder`.
        noise: keyword arguments of :class:`~pointgeo.nn.cdvae.noise.NoiseSchedule`.
    """

    def __init__(self, latent_dim: int = 256, max_atoms: int = 20, max_z: int = 100, num_properties: int = 1,
                 hidden_dim: int = 256, fc_num_layers: int = 1, encoder: dict | None = None,
                 decoder: dict | None = None, noise: dict | None = None) -> None:
        super().__init__()
        for key, value in (("latent_dim", latent_dim), ("max_atoms", max_atoms), ("max_z", max_z),
                           ("hidden_dim", hidden_dim), ("fc_num_layers", fc_num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer; got {value!r}")
        if not isinstance(num_properties, int) or num_properties < 0:
            raise ValueError(f"num_properties must be a non-negative integer; got {num_properties!r}")
        self.latent_dim, self.max_atoms, self.max_z, self.num_properties = latent_dim, max_atoms, max_z, num_properties
        encoder = {"out_channels": latent_dim, **(encoder or {}), "max_z": max_z}
        self.encoder = PeriodicDimeNetPP(**encoder)
        self.latent = LatentHead(encoder["out_channels"], latent_dim)
        self.predictors = LatentHeads(latent_dim, hidden_dim, fc_num_layers, max_atoms, max_z, num_properties)
        self.decoder = EquivariantScoreDecoder(latent_dim=latent_dim, **{**(decoder or {}), "max_z": max_z})
        self.noise = NoiseSchedule(**(noise or {}))
        self.register_buffer("lattice_mean", torch.zeros(6))
        self.register_buffer("lattice_std", torch.ones(6))
        self.register_buffer("property_mean", torch.zeros(num_properties))
        self.register_buffer("property_std", torch.ones(num_properties))
        self.register_buffer("scalers_fitted", torch.zeros((), dtype=torch.bool))

    # --- scalers --------------------------------------------------------------------------------------------
    def set_scalers(self, lattice_mean: Tensor, lattice_std: Tensor, property_mean: Tensor | None = None,
                    property_std: Tensor | None = None) -> None:
        """Store the training set's standardisers (``(6,)`` lattice, ``(P,)`` properties)."""
        self.lattice_mean.copy_(torch.as_tensor(lattice_mean).reshape(6))
        self.lattice_std.copy_(torch.as_tensor(lattice_std).reshape(6))
        if self.num_properties:
            if property_mean is None or property_std is None or torch.as_tensor(property_mean).numel() != \
                    self.num_properties:
                raise ValueError(f"the property head predicts {self.num_properties} properties; the property scaler "
                                 f"has {None if property_mean is None else torch.as_tensor(property_mean).numel()}")
            self.property_mean.copy_(torch.as_tensor(property_mean).reshape(-1))
            self.property_std.copy_(torch.as_tensor(property_std).reshape(-1))
        self.scalers_fitted.fill_(True)

    def scale_lattice(self, features: Tensor) -> Tensor:
        """``(B, 6)`` lattice features (:func:`~pointgeo.datamodules.crystals.lattice_features`) standardised."""
        return (features - self.lattice_mean.to(features)) / self.lattice_std.to(features)

    def unscale_lattice(self, prediction: Tensor, num_atoms: Tensor) -> tuple[Tensor, Tensor]:
        """The lattice head's ``(B, 6)`` back to ``(lengths (B, 3) Å, angles (B, 3) degrees)``: lengths are the
        unstandardised values times ``N^(1/3)`` (CDVAE's ``scale_length``)."""
        raw = prediction * self.lattice_std.to(prediction) + self.lattice_mean.to(prediction)
        return raw[:, :3] * num_atoms.to(raw.dtype).unsqueeze(-1) ** (1.0 / 3.0), raw[:, 3:]

    def scale_property(self, y: Tensor) -> Tensor:
        """``(B, P)`` properties standardised."""
        return (y - self.property_mean.to(y)) / self.property_std.to(y)

    def unscale_property(self, prediction: Tensor) -> Tensor:
        """The property head's ``(B, P)`` in the property's units."""
        return prediction * self.property_std.to(prediction) + self.property_mean.to(prediction)

    # --- the three calls ---------------------------------------------------------------------------------------
    def encode(self, frac_coords: Tensor, atom_types: Tensor, cell: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ (B, D), log σ² (B, D))`` of ``q(z | crystal)``."""
        check_crystals(frac_coords, atom_types, cell, batch, max_atoms=self.max_atoms, max_z=self.max_z)
        return self.latent(self.encoder(frac_coords, atom_types, cell, batch))

    def heads(self, z: Tensor) -> dict[str, Tensor]:
        """The invariant predictions from ``z (B, D)`` (module docstring)."""
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}); got {getattr(z, 'shape', z)}")
        return self.predictors(z)

    def decode(self, z: Tensor, pos: Tensor, atom_types: Tensor, cell: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        """``(score (N, 3), type_logits (N, max_z))`` of a (noisy) crystal given by Cartesian ``pos`` and ``cell``."""
        num = check_crystals(pos, atom_types, cell, batch, max_atoms=self.max_atoms, max_z=self.max_z,
                             coords_name="pos")
        if not isinstance(z, Tensor) or z.shape != (num, self.latent_dim):
            raise ValueError(f"z must have shape (B, D) = ({num}, {self.latent_dim}); got {getattr(z, 'shape', z)}")
        return self.decoder(z, pos, atom_types, cell, batch)


_TEST_KWARGS = {
    "latent_dim": 8, "hidden_dim": 16, "max_atoms": 24, "num_properties": 1,
    "encoder": {"hidden": 16, "num_blocks": 2, "int_emb": 8, "basis_emb": 4, "out_emb": 16, "num_spherical": 3,
                "num_radial": 4, "cutoff": 4.0, "max_neighbors": 12},
    "decoder": {"hidden": 16, "num_layers": 2, "num_basis": 8, "cutoff": 4.0, "max_neighbors": 12},
    "noise": {"num_levels": 4},
}


@register_model("cdvae", task="crystal_generation", invariance="equivariant", test_kwargs=_TEST_KWARGS)
def cdvae(latent_dim: int = 256, max_atoms: int = 20, max_z: int = 100, num_properties: int = 1,
          hidden_dim: int = 256, fc_num_layers: int = 1, encoder: dict | None = None, decoder: dict | None = None,
          noise: dict | None = None) -> CDVAE:
    """CDVAE: periodic DimeNet++ encoder (invariant), heads on z, equivariant PaiNN-style score decoder."""
    return CDVAE(latent_dim, max_atoms, max_z, num_properties, hidden_dim, fc_num_layers, encoder, decoder, noise)

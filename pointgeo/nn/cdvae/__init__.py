"""CDVAE, the crystal diffusion variational autoencoder (Xie et al., ICLR 2022), with an equivariant score decoder.

One job a module: :mod:`~.inputs` (input checks), :mod:`~.encoder` (periodic DimeNet++), :mod:`~.heads` (latent,
number of atoms, lattice, composition, property), :mod:`~.decoder` (equivariant score network), :mod:`~.noise`
(schedules), :mod:`~.losses` (the training losses), :mod:`~.langevin` (annealed Langevin generation),
:mod:`~.network` (assembly and registration as ``cdvae``).
"""

from pointgeo.nn.cdvae.network import CDVAE, cdvae

__all__ = ["CDVAE", "cdvae"]

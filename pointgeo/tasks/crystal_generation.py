"""Crystal generation with CDVAE (Xie et al., ICLR 2022): training on the six losses, generation by annealed
Langevin dynamics, reconstruction of given crystals and property optimisation in latent space.

The network (registry kind ``crystal_generation``, :mod:`pointgeo.nn.cdvae`) holds the encoder, the heads, the
equivariant score decoder, the noise schedules and the training set's lattice and property scalers; the task copies
the scalers from the datamodule (``pointgeo.datamodules.CrystalDataModule``) when a fit starts, so they are part of
the checkpoint's ``state_dict`` and a checkpoint alone can generate.

Training (:func:`pointgeo.nn.cdvae.losses.cdvae_losses`): ``L = 1 L_natom + 10 L_lattice + 1 L_comp + 10 L_coord +
1 L_type + 0.01 L_KL (+ 1 L_prop)``; the decoder sees the ground-truth lattice while ``epoch ≤
teacher_forcing_max_epoch`` (teacher forcing), the predicted one afterwards. Validation and test use the predicted
lattice and report ``val/loss = 10 L_coord + L_type`` (CDVAE's checkpointing loss), with every random draw seeded by
the batch index so the figure is comparable between epochs. Every loss is logged as ``{stage}/{name}_loss``.

Deviation: CDVAE's ``ReduceLROnPlateau`` is not offered; pointgeo's schedules are closed forms of the epoch (so a
resumed run follows the uninterrupted one exactly): the shipped configs decay with ``cosine`` to CDVAE's
``min_lr``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pointgeo.metrics.crystals import Crystal, batch_from_crystals, crystals_from_batch
from pointgeo.nn.cdvae.inputs import check_crystals
from pointgeo.nn.cdvae.langevin import langevin_generate
from pointgeo.nn.cdvae.losses import DEFAULT_WEIGHTS, VALIDATION_WEIGHTS, cdvae_losses, weighted_sum
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.base import OptimizerName, PointGeoTask, SchedulerName


class CDVAETask(PointGeoTask):
    """Train a registered ``crystal_generation`` network and generate crystals with it.

    Args:
        network: registry name (``cdvae``).
        network_kwargs: constructor arguments of the network (widths, ``max_atoms``, ``num_properties``,
            ``encoder``/``decoder``/``noise`` settings).
        cost_natom, cost_lattice, cost_composition, cost_coord, cost_type, beta, cost_property: the loss weights
            (CDVAE: 1, 10, 1, 10, 1, 0.01, 1).
        teacher_forcing_max_epoch: last epoch whose decoder sees the ground-truth lattice (CDVAE: perov 1500,
            carbon 1000, mp_20 500).
        langevin_steps_per_level, langevin_step_lr: generation (CDVAE: 100, 1e-4).
        optimizer, lr, weight_decay, momentum, scheduler, min_lr, step_size, gamma: as
            :class:`~pointgeo.tasks.base.PointGeoTask` (CDVAE: Adam, 1e-3, no weight decay).
    """

    task_kind = "crystal_generation"
    test_metric = "test/loss"
    test_columns = (("test/coord_loss", "coord loss", 1.0, ""), ("test/type_loss", "type loss", 1.0, ""),
                    ("test/loss", "10 coord + type", 1.0, ""))
    """What ``pointgeo train`` prints for each test rotation: ``(metric, label, scale, unit)``."""

    def __init__(
        self,
        network: str = "cdvae",
        network_kwargs: dict[str, Any] | None = None,
        cost_natom: float = 1.0,
        cost_lattice: float = 10.0,
        cost_composition: float = 1.0,
        cost_coord: float = 10.0,
        cost_type: float = 1.0,
        beta: float = 0.01,
        cost_property: float = 1.0,
        teacher_forcing_max_epoch: int = 1500,
        langevin_steps_per_level: int = 100,
        langevin_step_lr: float = 1e-4,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: SchedulerName = "none",
        min_lr: float = 1e-4,
        step_size: int = 20,
        gamma: float = 0.7,
    ) -> None:
        super().__init__()
        entry = get_model_entry(network)
        if entry.task != "crystal_generation":
            raise ValueError(f"network {network!r} is a {entry.task} network, not a crystal_generation one")
        weights = {"natom": cost_natom, "lattice": cost_lattice, "composition": cost_composition,
                   "coord": cost_coord, "type": cost_type, "kl": beta, "property": cost_property}
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0; got {bad}")
        if langevin_steps_per_level < 1 or not langevin_step_lr > 0:
            raise ValueError(f"langevin_steps_per_level must be >= 1 and langevin_step_lr > 0; got "
                             f"{langevin_steps_per_level}, {langevin_step_lr}")
        self.save_hyperparameters()
        self.net = create_model(network, **(network_kwargs or {}))
        self.weights = weights

    # --- scalers ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Copy the datamodule's scalers into the network when a fit starts (a resumed or loaded network keeps
        the ones it has)."""
        data = self.trainer.datamodule if self._trainer is not None else None
        if stage != "fit" or data is None or bool(self.net.scalers_fitted):
            return
        lattice, prop = getattr(data, "lattice_scaler", None), getattr(data, "property_scaler", None)
        if lattice is None:
            raise ValueError(f"{type(data).__name__} has no lattice_scaler: CDVAE trains on a CrystalDataModule")
        if self.net.num_properties and (prop is None or prop.mean.numel() < self.net.num_properties):
            raise ValueError(f"the network predicts {self.net.num_properties} properties but the datamodule carries "
                             f"{0 if prop is None else prop.mean.numel()}")
        k = self.net.num_properties
        self.net.set_scalers(lattice.mean, lattice.std, None if prop is None else prop.mean[:k],
                             None if prop is None else prop.std[:k])

    # --- training ----------------------------------------------------------------------------------------------
    def _step(self, batch: Any, stage: str, batch_idx: int) -> Tensor:
        if not bool(self.net.scalers_fitted):
            raise ValueError("the network has no lattice scaler: train through a CrystalDataModule (or call "
                             "task.net.set_scalers) first")
        training = stage == "train"
        generator = None
        if not training:
            generator = torch.Generator(device=batch.frac_coords.device).manual_seed(batch_idx)
        teacher = training and self.current_epoch <= self.hparams.teacher_forcing_max_epoch
        losses = cdvae_losses(self.net, batch, teacher_forcing=teacher, generator=generator)
        num = int(batch.num_graphs)
        for name, value in losses.items():
            self.log(f"{stage}/{name}_loss", value, batch_size=num)
        loss = weighted_sum(losses, self.weights if training else VALIDATION_WEIGHTS)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=num)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    # --- generation --------------------------------------------------------------------------------------------
    @property
    def num_noise_levels(self) -> int:
        """Noise levels of the Langevin generation (CDVAE: 50)."""
        return self.net.noise.num_levels

    def _decode(self, z: Tensor, generator: torch.Generator,
                on_level: Callable[[int, int], None] | None = None) -> list[Crystal]:
        out = langevin_generate(self.net, z, generator=generator, steps_per_level=self.hparams.langevin_steps_per_level,
                                step_lr=self.hparams.langevin_step_lr, on_level=on_level)
        return crystals_from_batch(out["frac_coords"], out["atom_types"], out["lengths"], out["angles"],
                                   out["num_atoms"])

    def _latent(self, batch: Any, generator: torch.Generator) -> Tensor:
        """``z ~ q(z | crystal)`` of every crystal of ``batch`` (CDVAE's reconstruction samples, not ``μ``)."""
        param = next(self.net.parameters())
        mu, log_var = self.net.encode(batch.frac_coords.to(param), batch.z.long(), batch.cell.to(param), batch.batch)
        eps = torch.randn(tuple(mu.shape), generator=generator, dtype=mu.dtype, device=generator.device)
        return mu + torch.exp(0.5 * log_var) * eps.to(mu.device)

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator,
               on_level: Callable[[int, int], None] | None = None) -> list[Crystal]:
        """``num`` new crystals in one batch: ``z ~ N(0, I)``, then annealed Langevin dynamics; ``on_level(k, K)``
        after each noise level. Every draw comes from ``generator``: the same seed gives the same crystals."""
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive integer; got {num!r}")
        param = next(self.net.parameters())
        z = torch.randn(num, self.net.latent_dim, generator=generator, dtype=param.dtype, device=generator.device)
        return self._decode(z.to(param.device), generator, on_level)

    @torch.no_grad()
    def reconstruct(self, batch: Any, *, generator: torch.Generator) -> list[Crystal]:
        """The crystals of ``batch`` encoded (``z`` sampled from ``q(z | x)``) and decoded, in batch order."""
        return self._decode(self._latent(batch, generator), generator)

    def optimize_property(self, batch: Any, *, steps: int, lr: float, generator: torch.Generator) -> list[Crystal]:
        """CDVAE's property optimisation: start from ``z ~ q(z | x)`` of each crystal of ``batch``, take ``steps``
        Adam steps (learning rate ``lr``; CDVAE: 5000 steps of 1e-3) that lower the property head's first output,
        then decode each final ``z``. Needs a network with a property head (``num_properties >= 1``)."""
        return self.optimize_property_path(batch, steps=steps, lr=lr, generator=generator, num_saved=1)[-1]

    def optimize_property_path(self, batch: Any, *, steps: int, lr: float, generator: torch.Generator,
                               num_saved: int = 10, on_decode: Callable[[int, int, int, int], None] | None = None
                               ) -> list[list[Crystal]]:
        """:meth:`optimize_property`, decoding the latents at ``num_saved`` points of the path (CDVAE's
        ``num_saved_crys``: 10): after the steps :func:`saved_steps` lists, the last being ``steps``. Returns
        ``num_saved`` lists (fewer when ``steps < num_saved``), each the crystals of ``batch`` in order.
        ``on_decode(d, D, k, K)`` is called after Langevin level ``k`` of ``K`` of decode ``d`` of ``D``."""
        if not self.net.num_properties:
            raise ValueError("optimize_property needs a property head: train with network_kwargs.num_properties >= 1")
        if not isinstance(steps, int) or steps < 0 or not lr > 0:
            raise ValueError(f"steps must be an integer >= 0 and lr > 0; got {steps!r}, {lr!r}")
        saved = saved_steps(steps, num_saved)
        latents = []
        with torch.inference_mode(False):
            with torch.no_grad():
                z = self._latent(batch, generator).clone()
            z.requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            if 0 in saved:
                latents.append(z.detach().clone())
            with torch.enable_grad():
                for step in range(1, steps + 1):
                    opt.zero_grad()
                    self.net.heads(z)["property"][:, 0].sum().backward()
                    opt.step()
                    if step in saved:
                        latents.append(z.detach().clone())
        self.net.zero_grad(set_to_none=True)
        def level_of(d: int) -> Callable[[int, int], None] | None:
            return None if on_decode is None else lambda k, n: on_decode(d, len(latents), k, n)

        with torch.no_grad():
            return [self._decode(latent, generator, level_of(d)) for d, latent in enumerate(latents)]

    # --- property model ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_property(self, crystals: Sequence[Crystal], *, batch_size: int = 256) -> np.ndarray:
        """``(n,)`` float64: the property head's first property (in the property's units, unstandardised) at the
        encoder's mean latent ``μ`` of each crystal, batched; NaN for a crystal the encoder cannot take (no atoms,
        more than ``max_atoms``, an element outside ``1..max_z``, a singular cell, non-finite numbers). This makes a
        trained checkpoint a :class:`~pointgeo.metrics.crystals.PropertyPredictor` (CDVAE's property models are a
        DimeNet++ encoder with an MLP on it, trained on the same column; here it is the CDVAE's own encoder and
        property head)."""
        if not self.net.num_properties:
            raise ValueError("predict_property needs a property head: train with network_kwargs.num_properties >= 1")
        param = next(self.net.parameters())
        out = np.full(len(crystals), np.nan)
        usable = [i for i, c in enumerate(crystals) if self._encodable(c)]
        for start in range(0, len(usable), batch_size):
            chosen = usable[start:start + batch_size]
            b = batch_from_crystals([crystals[i] for i in chosen], dtype=param.dtype, device=param.device)
            mu, _ = self.net.encode(b.frac_coords, b.z, b.cell, b.batch)
            pred = self.net.unscale_property(self.net.heads(mu)["property"])[:, 0]
            out[chosen] = pred.double().cpu().numpy()
        return out

    def _encodable(self, crystal: Crystal) -> bool:
        try:
            b = batch_from_crystals([crystal], dtype=torch.float64)
            check_crystals(b.frac_coords, b.z, b.cell, b.batch, max_atoms=self.net.max_atoms, max_z=self.net.max_z)
        except ValueError:
            return False
        return True


def saved_steps(steps: int, num_saved: int) -> list[int]:
    """The optimisation steps after which :meth:`CDVAETask.optimize_property_path` decodes: ``round(k · steps /
    num_saved)`` for ``k = 1 … num_saved``, duplicates dropped (``[0]`` for ``steps = 0``)."""
    if not isinstance(num_saved, int) or num_saved < 1:
        raise ValueError(f"num_saved must be a positive integer; got {num_saved!r}")
    return sorted({round(k * steps / num_saved) for k in range(1, num_saved + 1)})

"""CDVAETask: training through Lightning on real perov_5 rows, the scalers carried in the checkpoint, and the
generation interface (``sample``, ``reconstruct``, ``optimize_property``, ``num_noise_levels``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from pointgeo.datamodules import CrystalDataModule
from pointgeo.hub import load_checkpoint, rebuild_task
from pointgeo.metrics.crystals import Crystal, crystals_from_batch
from pointgeo.registry import get_model_entry
from pointgeo.tasks import CDVAETask, task_class_for
from pointgeo.tasks.crystal_generation import saved_steps
from pointgeo.testing.fake_data import write_csv_heads

LOSSES = ("natom", "lattice", "composition", "coord", "type", "kl", "property")


@pytest.fixture(scope="module")
def perov_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The first 32 / 16 / 16 rows of the perov_5 subset's train / val / test files."""
    root = tmp_path_factory.mktemp("perov_5")
    write_csv_heads(shared_data / "cdvae" / "perov_5_dev", root, {"train": 32, "val": 16, "test": 16})
    return root


@pytest.fixture(scope="module")
def trained(perov_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny CDVAE fitted for 3 epochs (teacher forcing in the first 2) and its best checkpoint."""
    out = tmp_path_factory.mktemp("run")
    data = CrystalDataModule(root=str(perov_root), download=False, cache=str(out / "cache"), batch_size=16,
                             eval_batch_size=16, seed=0)
    kwargs = {**get_model_entry("cdvae").test_kwargs, "max_atoms": 20}
    task = CDVAETask(network_kwargs=kwargs, teacher_forcing_max_epoch=1, langevin_steps_per_level=2, lr=1e-3)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=out, monitor="val/loss", mode="min")
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[checkpoint], gradient_clip_val=0.5, gradient_clip_algorithm="value",
                         default_root_dir=out)
    trainer.fit(task, datamodule=data)
    return task, data, trainer, Path(checkpoint.best_model_path)


def test_fit_logs_every_loss_and_copies_the_scalers(trained) -> None:
    task, data, trainer, _ = trained
    logged = trainer.logged_metrics
    for stage in ("train", "val"):
        for name in LOSSES:
            value = logged[f"{stage}/{name}_loss"]
            assert torch.isfinite(value), (stage, name)
    assert bool(task.net.scalers_fitted)
    assert torch.allclose(task.net.lattice_mean.double(), data.lattice_scaler.mean, rtol=0, atol=1e-5)
    assert torch.allclose(task.net.property_std.double(), data.property_scaler.std, rtol=0, atol=1e-5)
    val = logged["val/loss"]
    assert torch.allclose(val, 10 * logged["val/coord_loss"] + logged["val/type_loss"], rtol=1e-5, atol=0)


def test_a_checkpoint_alone_generates_the_same_crystals(trained) -> None:
    task, _, _, path = trained
    ckpt = load_checkpoint(path)
    assert ckpt["pointgeo"]["task"] == "crystal_generation"
    assert task_class_for(ckpt["pointgeo"], "x") is CDVAETask
    rebuilt = rebuild_task(ckpt, str(path))
    assert bool(rebuilt.net.scalers_fitted)
    levels: list[tuple[int, int]] = []
    first = rebuilt.sample(5, generator=torch.Generator().manual_seed(3), on_level=lambda k, n: levels.append((k, n)))
    again = rebuilt.sample(5, generator=torch.Generator().manual_seed(3))
    other = rebuilt.sample(5, generator=torch.Generator().manual_seed(4))
    assert rebuilt.num_noise_levels == 4 and levels == [(k, 4) for k in range(4)]
    assert len(first) == 5 and all(isinstance(c, Crystal) for c in first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
        np.testing.assert_array_equal(a.atom_types, b.atom_types)
        np.testing.assert_array_equal(a.lengths, b.lengths)
    assert any(not np.array_equal(a.frac_coords, b.frac_coords) for a, b in zip(first, other)
               if a.frac_coords.shape == b.frac_coords.shape) or any(
        a.frac_coords.shape != b.frac_coords.shape for a, b in zip(first, other))
    for c in first:
        n = len(c.atom_types)
        assert 1 <= n <= 20 and c.frac_coords.shape == (n, 3)
        assert ((c.frac_coords >= 0) & (c.frac_coords <= 1)).all()
        assert ((c.atom_types >= 1) & (c.atom_types <= 100)).all()
        assert (c.lengths >= 1.0).all() and ((c.angles >= 30) & (c.angles <= 150)).all()


def test_reconstruct_and_optimize_property(trained) -> None:
    task, data, _, _ = trained
    task.eval()
    batch = next(iter(data.test_dataloader()))
    recon = task.reconstruct(batch, generator=torch.Generator().manual_seed(0))
    assert len(recon) == batch.num_graphs
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z0 = task._latent(batch, torch.Generator().manual_seed(1))
        before = task.net.heads(z0)["property"][:, 0]
    optimised = task.optimize_property(batch, steps=20, lr=0.05, generator=g)
    assert len(optimised) == batch.num_graphs
    # the same start and Adam steps, replayed: the property head's value went down for every crystal
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        task.net.heads(z)["property"][:, 0].sum().backward()
        opt.step()
    after = task.net.heads(z.detach())["property"][:, 0]
    assert bool((after < before).all())
    with pytest.raises(ValueError, match="steps must be an integer"):
        task.optimize_property(batch, steps=-1, lr=0.1, generator=g)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        task.sample(0, generator=g)


def test_predict_property_is_the_property_head_at_the_mean_latent(trained) -> None:
    task, data, _, _ = trained
    task.eval()
    batch = next(iter(data.test_dataloader()))
    crystals = crystals_from_batch(batch.frac_coords, batch.z, batch.lengths, batch.angles, batch.natoms)
    with torch.no_grad():
        mu, _ = task.net.encode(batch.frac_coords, batch.z, batch.cell, batch.batch)
        expected = task.net.unscale_property(task.net.heads(mu)["property"])[:, 0].double().numpy()
    got = task.predict_property(crystals, batch_size=5)  # several batches
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.std(got) > 0  # the prediction depends on the crystal
    first = crystals[0]
    foreign = Crystal(first.frac_coords, np.full_like(first.atom_types, 101), first.lengths, first.angles)
    empty = Crystal(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), first.lengths, first.angles)
    flat = Crystal(first.frac_coords, first.atom_types, first.lengths, np.array([90.0, 90.0, 180.0]))
    mixed = task.predict_property([foreign, crystals[1], empty, flat])
    assert np.isnan(mixed[[0, 2, 3]]).all()
    np.testing.assert_allclose(mixed[1], expected[1], rtol=1e-5, atol=1e-6)


def test_the_optimisation_path_decodes_at_the_saved_steps(trained) -> None:
    task, data, _, _ = trained
    task.eval()
    batch = next(iter(data.test_dataloader()))
    assert saved_steps(5000, 10) == list(range(500, 5001, 500)) and saved_steps(0, 10) == [0]
    calls = []
    path = task.optimize_property_path(batch, steps=6, lr=0.05, generator=torch.Generator().manual_seed(1),
                                       num_saved=3, on_decode=lambda *call: calls.append(call))
    assert len(path) == 3 and all(len(crystals) == batch.num_graphs for crystals in path)
    levels = task.num_noise_levels  # the progress callback sees every level of every decode, in order
    assert calls == [(d, 3, k, levels) for d in range(3) for k in range(levels)]
    # one saved point is optimize_property: the same draws, the same crystals
    last = task.optimize_property_path(batch, steps=6, lr=0.05, generator=torch.Generator().manual_seed(1),
                                       num_saved=1)[-1]
    again = task.optimize_property(batch, steps=6, lr=0.05, generator=torch.Generator().manual_seed(1))
    for a, b in zip(last, again):
        np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
        np.testing.assert_array_equal(a.atom_types, b.atom_types)


def test_wrong_network_kind_and_missing_scalers_are_refused() -> None:
    with pytest.raises(ValueError, match="not a crystal_generation one"):
        CDVAETask(network="painn")
    task = CDVAETask(network_kwargs=get_model_entry("cdvae").test_kwargs)
    with pytest.raises(ValueError, match="no lattice scaler"):
        task.training_step(None, 0)

"""``pointgeo generate`` end to end with the real CDVAETask: a tiny CDVAE trained for one epoch on real perov_5
rows, its checkpoint given to the command, N CIF files that pymatgen reads back, and the report against the rows'
test split."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from pymatgen.core import Structure

from pointgeo.cli import main as pointgeo_main
from pointgeo.datamodules import CrystalDataModule
from pointgeo.generation.report import load_reference
from pointgeo.generation.run import read_generated
from pointgeo.hub import from_pretrained
from pointgeo.metrics.crystals import SR_THRESHOLDS, evaluate, fingerprints, property_statistics, success_rates
from pointgeo.registry import get_model_entry
from pointgeo.tasks import CDVAETask
from pointgeo.testing.fake_data import write_csv_heads


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """A tiny CDVAE fitted for one epoch on 16 training rows, its checkpoint and the data folder."""
    root = tmp_path_factory.mktemp("perov_5")
    write_csv_heads(shared_data / "cdvae" / "perov_5_dev", root, {"train": 16, "val": 8, "test": 8})
    out = tmp_path_factory.mktemp("run")
    data = CrystalDataModule(root=str(root), download=False, cache=str(out / "cache"), batch_size=8,
                             eval_batch_size=8, seed=0)
    task = CDVAETask(network_kwargs={**get_model_entry("cdvae").test_kwargs, "max_atoms": 20},
                     teacher_forcing_max_epoch=1, langevin_steps_per_level=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=out)
    trainer.fit(task, datamodule=data)
    path = out / "cdvae.ckpt"
    trainer.save_checkpoint(path)
    return path, root


def test_generate_writes_cifs_pymatgen_reads_and_the_report(checkpoint: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path, root = checkpoint
    out = tmp_path / "gen"
    args = ["generate", str(path), "--num", "5", "--batch-size", "3", "--seed", "2", "--out", str(out),
            "--reference", str(root / "test.csv"), "--dataset", "perov_5", "--no-progress",
            "--property-model", str(path), "--optimize-starts", "3", "--optimize-steps", "4", "--optimize-saved", "2"]
    pointgeo_main(args)
    assert "5 crystals in" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    levels = from_pretrained(str(path)).num_noise_levels
    assert manifest["settings"]["num_noise_levels"] == levels and manifest["checkpoint"]["task_class"] == "CDVAETask"
    records = [r for k in ("0", "1") for r in manifest["batches"][k]["crystals"]]
    assert [r["index"] for r in records] == list(range(5))
    written = [r for r in records if r["cif"] is not None]
    assert written, "no generated crystal could be built"
    for record in written:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(out / record["cif"])
        assert len(structure) == record["natoms"] and structure.composition.formula == record["formula"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["generated"] == 5 and metrics["counts"]["constructed"] == len(written)
    assert metrics["reference"]["crystals"] == 8 and (out / "report.html").is_file()
    # the property EMD: the checkpoint's property head scores both sides
    task = from_pretrained(str(path))
    gen_eval = evaluate(read_generated(out, manifest))
    ref_eval = evaluate(load_reference(str(root / "test.csv")).crystals)
    fingerprints([*gen_eval, *ref_eval])  # as the report: a crystal whose fingerprint fails is invalid
    n = sum(e.valid for e in gen_eval)
    if n:
        expected = property_statistics(gen_eval, ref_eval, n_samples=n, seed=2, property_model=task)["wdist_prop"]
        assert math.isclose(metrics["property"]["wdist_prop"], expected, rel_tol=1e-9, abs_tol=1e-12)
        assert metrics["property"]["model"]["spec"] == str(path)
    else:
        assert metrics["property"] is None
    # the optimisation: 3 runs, 2 decoded points each, SR recomputed from the stored path
    opt = json.loads((out / "optimization.json").read_text())
    assert opt["saved_steps"] == [2, 4] and len(opt["runs"]) == 3 and all(len(r["path"]) == 2 for r in opt["runs"])
    props = np.array([[np.inf if p["property"] is None else p["property"] for p in r["path"]] for r in opt["runs"]]).T
    valid = np.array([[p["valid"] for p in r["path"]] for r in opt["runs"]]).T
    rates = success_rates(props, valid, SR_THRESHOLDS["perov_5"])
    assert metrics["optimization"]["success_rates"] == {k: rates[k] for k in ("SR5", "SR10", "SR15")}
    before = {p.name: p.read_bytes() for p in (out / "cif").iterdir()}
    stored = (out / "optimization.json").read_bytes()
    pointgeo_main(args)  # the same command again: nothing regenerated, the same files
    assert {p.name: p.read_bytes() for p in (out / "cif").iterdir()} == before
    assert (out / "optimization.json").read_bytes() == stored

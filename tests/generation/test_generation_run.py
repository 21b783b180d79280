"""Batched, resumable generation into a folder (pointgeo.generation.run), driven by a test-double sampler with the
generative task's interface (crystal_sampler_double.ToySampler): CIF files pymatgen reads back, invalid crystals
recorded and never fatal, batches seeded by (seed, k), resuming after SIGKILL or a crash byte for byte, and one clear
error for a folder holding something else."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from crystal_sampler_double import ToySampler
from pymatgen.core import Structure

from conftest import REPO_ROOT
from pointgeo.generation import files as gen_files
from pointgeo.generation import run as gen_run
from pointgeo.generation.run import (
    GenerationFolderError,
    GenerationSettings,
    batch_seed,
    generate_crystals,
    read_generated,
)

SHA = "ab" * 32
CHECKPOINT = {"spec": "toy", "sha256": SHA}


def settings(num: int = 7, batch_size: int = 3, seed: int = 5, levels: int = 4, sha: str = SHA) -> GenerationSettings:
    return GenerationSettings(num=num, batch_size=batch_size, seed=seed, checkpoint_sha256=sha,
                              num_noise_levels=levels)


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative path → bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_cifs_read_back_and_invalid_crystals_are_recorded(tmp_path: Path) -> None:
    sampler = ToySampler(invalid_every=2)
    manifest = generate_crystals(sampler, tmp_path / "gen", settings(num=7, batch_size=3), CHECKPOINT,
                                 progress=False)
    assert sampler.calls == [3, 3, 1]  # one sample() call per batch, the last one partial
    assert manifest["num_batches"] == 3 and sorted(manifest["batches"]) == ["0", "1", "2"]
    records = [r for k in range(3) for r in manifest["batches"][str(k)]["crystals"]]
    assert [r["index"] for r in records] == list(range(7))
    crystals = read_generated(tmp_path / "gen", manifest)
    kinds = [sampler.broken_kind(i % 3) for i in range(7)]  # position within its batch decides the breakage
    assert kinds == [None, "nan_lattice", None, None, "nan_lattice", None, None]
    for record, crystal, kind in zip(records, crystals, kinds):
        path = tmp_path / "gen" / f"cif/{record['index']}.cif"
        if kind == "nan_lattice":  # not constructible: no CIF, recorded as invalid with the reason
            assert record["cif"] is None and not path.exists() and not record["constructed"]
            assert not record["valid"] and "non-finite" in record["problems"][0]
            assert np.isnan(crystal.lengths[0])  # the raw output is kept as the sampler returned it
            continue
        assert record["cif"] == f"cif/{record['index']}.cif" and record["constructed"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_file(path)
        np.testing.assert_allclose(structure.lattice.abc, crystal.lengths, rtol=0, atol=1e-7)
        np.testing.assert_allclose(structure.lattice.angles, crystal.angles, rtol=0, atol=1e-6)
        # CifWriter groups the sites by element: every atom must have exactly one site of its element at its place
        delta = structure.frac_coords[:, None] - crystal.frac_coords[None]  # (sites, atoms, 3)
        same_place = (np.abs(delta - np.round(delta)) < 1e-7).all(-1)
        same_element = np.array([s.specie.Z for s in structure])[:, None] == crystal.atom_types[None]
        assert len(structure) == len(crystal.atom_types)
        assert ((same_place & same_element).sum(0) == 1).all() and ((same_place & same_element).sum(1) == 1).all()
        assert record["natoms"] == len(crystal.atom_types) and record["formula"] == structure.composition.formula


def test_every_kind_of_broken_structure_is_recorded_not_fatal(tmp_path: Path) -> None:
    sampler = ToySampler(invalid_every=1)  # every crystal broken, in turn: NaN, overlap, degenerate
    manifest = generate_crystals(sampler, tmp_path, settings(num=6, batch_size=6), CHECKPOINT, progress=False)
    records = manifest["batches"]["0"]["crystals"]
    assert [r["constructed"] for r in records] == [False, True, False] * 2
    assert not any(r["struct_valid"] or r["valid"] for r in records)
    assert "non-finite" in records[0]["problems"][0]
    assert "Å apart" in records[1]["problems"][0] and records[1]["cif"] == "cif/1.cif"  # overlap: built, written
    assert "cannot build the lattice" in records[2]["problems"][0]
    assert sorted(p.name for p in (tmp_path / "cif").iterdir()) == ["1.cif", "4.cif"]


def test_batch_k_is_drawn_from_its_own_seeded_generator(tmp_path: Path) -> None:
    generate_crystals(ToySampler(), tmp_path / "a", settings(num=7, batch_size=3, seed=5), CHECKPOINT,
                      progress=False)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    crystals = read_generated(tmp_path / "a", manifest)
    for k, start in enumerate((0, 3, 6)):
        size = min(3, 7 - start)
        alone = ToySampler().sample(size, generator=torch.Generator().manual_seed(batch_seed(5, k)))
        for got, want in zip(crystals[start:start + size], alone):
            assert np.array_equal(got.frac_coords, want.frac_coords)  # exact float64 round trip of the raw file
            assert np.array_equal(got.lengths, want.lengths) and np.array_equal(got.atom_types, want.atom_types)
    other = generate_crystals(ToySampler(), tmp_path / "b", settings(seed=6), CHECKPOINT, progress=False)
    assert not np.array_equal(read_generated(tmp_path / "b", other)[0].frac_coords, crystals[0].frac_coords)
    assert len({batch_seed(5, k) for k in range(100)}) == 100


def test_a_finished_run_is_not_repeated_and_a_deleted_file_is_regenerated(tmp_path: Path) -> None:
    generate_crystals(ToySampler(), tmp_path, settings(), CHECKPOINT, progress=False)
    before = folder_bytes(tmp_path)
    again = ToySampler()
    generate_crystals(again, tmp_path, settings(), CHECKPOINT, progress=False)
    assert again.calls == [] and folder_bytes(tmp_path) == before
    (tmp_path / "cif" / "4.cif").unlink()
    generate_crystals(again, tmp_path, settings(), CHECKPOINT, progress=False)
    assert again.calls == [3] and folder_bytes(tmp_path) == before  # only batch 1 ran again


def test_a_crash_after_the_cifs_before_the_manifest_resumes_identically(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    generate_crystals(ToySampler(invalid_every=2), tmp_path / "whole", settings(), CHECKPOINT, progress=False)
    real = gen_run.write_json_atomic
    written: list[str] = []

    def crash_on_second_manifest(path: Path, value, **kwargs) -> None:
        if path.name == "manifest.json" and len(value["batches"]) == 2:
            raise KeyboardInterrupt("killed between batch 1's files and the manifest")
        written.append(path.name)
        real(path, value, **kwargs)

    monkeypatch.setattr(gen_run, "write_json_atomic", crash_on_second_manifest)
    with pytest.raises(KeyboardInterrupt):
        generate_crystals(ToySampler(invalid_every=2), tmp_path / "cut", settings(), CHECKPOINT, progress=False)
    monkeypatch.setattr(gen_run, "write_json_atomic", real)
    assert (tmp_path / "cut" / "cif" / "3.cif").is_file()  # batch 1's CIFs are there, the manifest does not say so
    assert sorted(json.loads((tmp_path / "cut" / "manifest.json").read_text())["batches"]) == ["0"]
    (tmp_path / "cut" / "cif" / ".5.cif.x1y2.tmp").write_text("half a file")  # what a kill mid-write leaves
    resumed = ToySampler(invalid_every=2)
    generate_crystals(resumed, tmp_path / "cut", settings(), CHECKPOINT, progress=False)
    assert resumed.calls == [3, 1]
    assert folder_bytes(tmp_path / "cut") == folder_bytes(tmp_path / "whole")


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from crystal_sampler_double import ToySampler
from pointgeo.generation.run import GenerationSettings, generate_crystals
settings = GenerationSettings(num=8, batch_size=2, seed=3, checkpoint_sha256={sha!r}, num_noise_levels=4)
generate_crystals(ToySampler(invalid_every=2, delay={delay}), {out!r}, settings, {checkpoint!r}, progress=False)
"""


def test_killed_with_sigkill_after_the_first_batch_the_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """The run is killed (SIGKILL: no clean-up of any kind) as soon as its manifest records a finished batch; the
    same command then completes it, and the folder equals that of a run never interrupted, byte for byte."""
    out = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), sha=SHA, delay=0.25, out=str(out),
                               checkpoint=CHECKPOINT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                finished = json.loads((out / "manifest.json").read_text())["batches"]
            except (OSError, ValueError):
                finished = {}
            if finished:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # still running: 4 batches of ~1 s each
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((out / "manifest.json").read_text())["batches"]
    assert 1 <= len(done) < 4  # interrupted part-way
    settings_ = settings(num=8, batch_size=2, seed=3)
    resumed = ToySampler(invalid_every=2)
    generate_crystals(resumed, out, settings_, CHECKPOINT, progress=False)
    assert resumed.calls == [2] * (4 - len(done))  # only the unfinished batches ran
    generate_crystals(ToySampler(invalid_every=2), tmp_path / "whole", settings_, CHECKPOINT, progress=False)
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")
    assert len(list((out / "cif").glob("*.cif"))) == 8 - 4  # position 1 of every batch has a NaN lattice: no CIF


def test_a_folder_with_other_settings_or_other_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    generate_crystals(ToySampler(), out, settings(), CHECKPOINT, progress=False)
    before = folder_bytes(out)
    with pytest.raises(GenerationFolderError, match=r"other settings \(seed=5; this run: seed=6\)"):
        generate_crystals(ToySampler(), out, settings(seed=6), CHECKPOINT, progress=False)
    with pytest.raises(GenerationFolderError, match="checkpoint_sha256=" + SHA):
        generate_crystals(ToySampler(), out, settings(sha="cd" * 32), CHECKPOINT, progress=False)
    assert folder_bytes(out) == before  # nothing touched
    replaced = generate_crystals(ToySampler(), out, settings(seed=6), CHECKPOINT, overwrite=True, progress=False)
    generate_crystals(ToySampler(), tmp_path / "fresh", settings(seed=6), CHECKPOINT, progress=False)
    assert replaced["settings"]["seed"] == 6 and folder_bytes(out) == folder_bytes(tmp_path / "fresh")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("not mine")
    for overwrite in (False, True):
        with pytest.raises(GenerationFolderError, match="holds no manifest.json"):
            generate_crystals(ToySampler(), other, settings(), CHECKPOINT, overwrite=overwrite, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]  # nothing written into a folder not ours
    with open(out / gen_run.LOCK, "a") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(GenerationFolderError, match="another pointgeo generate is writing to"):
            generate_crystals(ToySampler(), out, settings(seed=6), CHECKPOINT, progress=False)
        fcntl.flock(held, fcntl.LOCK_UN)
    (out / "manifest.json").write_text("{ half")
    with pytest.raises(GenerationFolderError, match="not a readable generation manifest"):
        generate_crystals(ToySampler(), out, settings(), CHECKPOINT, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(GenerationFolderError, match="is a file"):
        generate_crystals(ToySampler(), tmp_path / "file", settings(), CHECKPOINT, progress=False)


def test_bad_settings_and_bad_sampler_output_give_one_clear_error(tmp_path: Path) -> None:
    for key, value in (("num", 0), ("batch_size", -1), ("num_noise_levels", 2.5), ("seed", -3)):
        kwargs = {"num": 4, "batch_size": 2, "seed": 0, "checkpoint_sha256": SHA, "num_noise_levels": 4, key: value}
        with pytest.raises(ValueError, match=key):
            GenerationSettings(**kwargs)
    with pytest.raises(ValueError, match="num_noise_levels=3 but the sampler has 4"):
        generate_crystals(ToySampler(), tmp_path / "a", settings(levels=3), CHECKPOINT, progress=False)

    class Short(ToySampler):
        def sample(self, num, **kwargs):
            return super().sample(num, **kwargs)[:-1]

    with pytest.raises(ValueError, match=r"Short.sample\(3\) returned list of length 2"):
        generate_crystals(Short(), tmp_path / "b", settings(), CHECKPOINT, progress=False)


def test_atomic_text_files_leave_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.cif"
    gen_files.write_text_atomic(target, "good")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(gen_files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        gen_files.write_text_atomic(target, "bad")
    assert target.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["x.cif"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)

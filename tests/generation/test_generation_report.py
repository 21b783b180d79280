"""The report of a generation folder (pointgeo.generation.report) and the ``pointgeo generate`` command, driven by
test-double samplers with the generative task's interface (crystal_sampler_double): metrics equal to the metric
functions applied directly, a "perfect" model that replays real perov_5 test crystals scores COV 100 %, the HTML
is self-contained with its pictures, metrics.json is written first, a current report is not recomputed."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from crystal_sampler_double import ReplaySampler, ToySampler
from scipy.stats import wasserstein_distance

from pointgeo.generation import command as gen_command
from pointgeo.generation import report as gen_report
from pointgeo.generation.files import finite_or_none
from pointgeo.generation.report import PAPER_CDVAE, load_reference, write_report
from pointgeo.generation.run import GenerationSettings, generate_crystals, read_generated
from pointgeo.metrics.crystals import evaluate, validity

SHA = "ef" * 32
ROWS = 6


def settings(num: int, batch_size: int = 3, levels: int = 4) -> GenerationSettings:
    return GenerationSettings(num=num, batch_size=batch_size, seed=1, checkpoint_sha256=SHA, num_noise_levels=levels)


@pytest.fixture
def reference_csv(shared_sample, tmp_path: Path) -> Path:
    """The first rows of the shared perov_5 subset's test split, as a CDVAE CSV."""
    with open(shared_sample("cdvae", "perov_5_dev", "test.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))[:ROWS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / "reference.csv"
    path.write_text(buffer.getvalue())
    return path


def embedded_png(page: str) -> np.ndarray:
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match, "no embedded PNG"
    return plt.imread(io.BytesIO(base64.b64decode(match.group(1))), format="png")


def test_a_perfect_model_replaying_the_reference_covers_it_fully(reference_csv: Path, tmp_path: Path) -> None:
    reference = load_reference(str(reference_csv))
    assert len(reference.crystals) == ROWS and reference.dataset is None
    out = tmp_path / "gen"
    manifest = generate_crystals(ReplaySampler(reference.crystals, num_noise_levels=4), out, settings(ROWS),
                                 {"spec": "replay"}, progress=False)
    metrics = write_report(out, manifest, reference=str(reference_csv), dataset="perov_5", progress=False)
    refs = evaluate(reference.crystals)
    assert metrics["validity"] == validity(refs) and metrics["reference"]["validity"] == validity(refs)
    assert metrics["counts"]["generated"] == ROWS and metrics["counts"]["constructed"] == ROWS
    assert metrics["coverage"]["cov_recall"] == 1.0 and metrics["coverage"]["cov_precision"] == 1.0
    assert metrics["coverage"]["amsd_recall"] < 1e-6  # every reference crystal's own copy is among the generated
    assert (metrics["coverage"]["struct_cutoff"], metrics["coverage"]["comp_cutoff"]) == (0.2, 4.0)  # perov_5's
    valid = [e for e in refs if e.valid]
    stats = metrics["property_statistics"]
    assert stats["n_samples"] == len(valid)  # fewer than 1 000 valid: all of them, and a note says so
    assert any(f"all {len(valid)} valid" in n for n in metrics["notes"])
    expected = wasserstein_distance([e.structure.density for e in valid], [e.structure.density for e in refs])
    assert stats["wdist_density"] == pytest.approx(expected, rel=0, abs=1e-12)
    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON, no NaN
    assert on_disk["coverage"] == metrics["coverage"] and on_disk["report_settings"]["dataset"] == "perov_5"
    page = (out / "report.html").read_text()
    assert "<td>COV-R</td><td>100.00 %</td><td>99.45 %</td>" in page  # ours beside the paper's CDVAE figure
    assert f"{PAPER_CDVAE['perov_5']['wdist_density']:.4g}" in page
    image = embedded_png(page)
    assert image.shape[1] == 220 * 6 and image.shape[0] == 260  # six structures in a row
    assert "<script" not in page and "http" not in page  # self-contained


class FirstLengthModel:
    """A property model double: the property is the first lattice length."""

    def predict_property(self, crystals) -> np.ndarray:
        return np.array([c.lengths[0] for c in crystals], dtype=np.float64)


def test_the_property_emd_and_the_success_rates_go_into_the_report(reference_csv: Path, tmp_path: Path) -> None:
    reference = load_reference(str(reference_csv))
    out = tmp_path / "gen"
    manifest = generate_crystals(ReplaySampler(reference.crystals[::-1], num_noise_levels=4), out, settings(ROWS),
                                 {"spec": "replay"}, progress=False)
    optimization = {"format": "pointgeo-optimization/1", "settings": {"starts": 2, "steps": 3},
                    "success_rates": {"SR5": 0.5, "SR10": 0.5, "SR15": 1.0}, "thresholds": {"SR5": 0.4392},
                    "saved_steps": [3], "runs": [{"start_formula": "SrTiO3"}]}
    metrics = write_report(out, manifest, reference=str(reference_csv), dataset="perov_5", progress=False,
                           property_model=FirstLengthModel(), property_model_identity={"spec": "m", "sha256": "ab"},
                           optimization=optimization)
    refs = evaluate(reference.crystals)
    valid = [e for e in evaluate(reference.crystals[::-1]) if e.valid]
    expected = wasserstein_distance([e.crystal.lengths[0] for e in valid], [e.crystal.lengths[0] for e in refs])
    assert metrics["property"]["wdist_prop"] == pytest.approx(expected, rel=0, abs=1e-12)
    assert metrics["property"]["model"] == {"spec": "m", "sha256": "ab"}
    assert metrics["property"]["n_samples"] == len(valid)
    assert metrics["optimization"] == {k: optimization[k] for k in ("settings", "success_rates", "thresholds",
                                                                     "saved_steps")}
    assert metrics["report_settings"]["property_model"] == "ab"
    assert metrics["report_settings"]["optimization"] == optimization["settings"]
    page = (out / "report.html").read_text()
    assert f"<td>EMD property</td><td>{expected:.4g}</td><td>0.0264</td>" in page
    assert "<td>optimisation SR5</td><td>0.5</td><td>0.52</td>" in page
    # another property model: the report is recomputed, without it the EMD is gone and a note says why
    again = write_report(out, manifest, reference=str(reference_csv), dataset="perov_5", progress=False)
    assert again["property"] is None and "optimization" not in again
    assert any("--property-model" in n for n in again["notes"])


def test_without_a_reference_validity_only_and_invalid_crystals_listed(tmp_path: Path) -> None:
    sampler = ToySampler(invalid_every=2)
    manifest = generate_crystals(sampler, tmp_path, settings(7), {"spec": "toy"}, progress=False)
    metrics = write_report(tmp_path, manifest, progress=False)
    records = [r for k in range(3) for r in manifest["batches"][str(k)]["crystals"]]
    assert metrics["validity"] == validity(evaluate(read_generated(tmp_path, manifest)))
    assert metrics["counts"]["valid"] == sum(r["valid"] for r in records)
    assert metrics["counts"]["constructed"] == sum(r["constructed"] for r in records) == 5
    assert metrics["coverage"] is None and metrics["property_statistics"] is None
    assert any("--reference" in n for n in metrics["notes"])
    page = (tmp_path / "report.html").read_text()
    invalid = [r for r in records if not r["valid"]]
    assert f"Invalid crystals ({len(invalid)})" in page
    assert page.count("non-finite lattice parameters or coordinates") == 2  # the two NaN lattices, named
    assert "<td>COV-R</td><td>–</td><td>–</td>" in page  # no reference, no dataset: nothing to compare
    embedded_png(page)


def test_metrics_json_comes_first_and_a_current_report_is_not_recomputed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = generate_crystals(ToySampler(), tmp_path, settings(4), {"spec": "toy"}, progress=False)

    def no_html(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(gen_report, "render_html", no_html)
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_report(tmp_path, manifest, progress=False)
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "report.html").exists()
    monkeypatch.undo()
    write_report(tmp_path, manifest, progress=False)
    before = {p: (tmp_path / p).read_bytes() for p in ("metrics.json", "report.html")}

    def no_metrics(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(gen_report, "compute_metrics", no_metrics)
    write_report(tmp_path, manifest, progress=False)  # same settings, both files there: nothing to do
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    with pytest.raises(AssertionError, match="recomputed"):  # other report settings: computed again
        write_report(tmp_path, manifest, dataset="perov_5", progress=False)


def test_reference_specs(reference_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("POINTGEO_HOME", str(home))
    folder = home / "datasets" / "cdvae" / "perov_5"
    folder.mkdir(parents=True)
    (folder / "test.csv").write_bytes(reference_csv.read_bytes())  # a benchmark split placed by hand
    by_split = load_reference("perov_5:test")
    by_file = load_reference(str(reference_csv))
    assert by_split.dataset == "perov_5" and len(by_split.crystals) == ROWS
    assert all(np.array_equal(a.frac_coords, b.frac_coords) for a, b in zip(by_split.crystals, by_file.crystals))
    data = {"_class_path": "pointgeo.datamodules.crystals.CrystalDataModule", "dataset": "perov_5",
            "root": str(folder), "download": False, "cache": str(tmp_path / "cache")}
    own = load_reference("test", data)
    assert own.dataset == "perov_5" and len(own.crystals) == ROWS
    with pytest.raises(ValueError, match="DATASET:SPLIT"):
        load_reference("perov_5:holdout")
    with pytest.raises(ValueError, match="records no data settings"):
        load_reference("test", None)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_reference(str(tmp_path / "missing.csv"))


def test_the_command_runs_resumes_and_refuses_non_generative_checkpoints(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    loaded: list[str] = []

    def fake_load(spec: str, device: str):
        loaded.append(spec)
        return ToySampler(invalid_every=3), {"spec": spec, "sha256": SHA, "data": None}

    monkeypatch.setattr(gen_command, "load_sampler", fake_load)
    out = tmp_path / "gen"
    args = ["toy.ckpt", "--num", "5", "--out", str(out), "--batch-size", "2", "--seed", "4", "--no-progress"]
    metrics = gen_command.main(args)
    printed = capsys.readouterr().out
    assert f"5 crystals in {out / 'cif'}" in printed and "structure validity" in printed and "report:" in printed
    assert metrics["generation"] == {"num": 5, "batch_size": 2, "seed": 4, "checkpoint_sha256": SHA,
                                     "num_noise_levels": 4}
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    gen_command.main(args)  # the same command again: everything is there
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(SystemExit, match=r"^pointgeo generate: .* other settings \(seed=4; this run: seed=5\)"):
        gen_command.main([*args[:-2], "5", "--no-progress"])
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="pointgeo generate: no checkpoint file at"):
        gen_command.main([str(tmp_path / "none.ckpt"), "--num", "2", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not a crystal generation model"):
        gen_command.main(["pointnet.synthetic_z", "--num", "2", "--out", str(tmp_path / "y")])
    assert not (tmp_path / "y").exists()


def test_undefined_figures_are_written_as_null() -> None:
    assert finite_or_none({"a": float("nan"), "b": [float("inf"), 1.5, {"c": -float("inf")}], "d": 2}) \
        == {"a": None, "b": [None, 1.5, {"c": None}], "d": 2}

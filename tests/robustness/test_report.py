"""`pointgeo robustness` on the two shipped models: protocols, sweep, invariance figures, HTML, atomicity."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch

from pointgeo.cli import main
from pointgeo.robustness import ProtocolSettings, ReportExistsError, run_robustness
from pointgeo.robustness import report as report_module
from pointgeo.robustness.protocol import rotation_table

MODELS = ["tinvnn_pointnet.synthetic_z", "pointnet.synthetic_z"]
QUICK = ["--max-samples", "48", "--n-rotations", "2", "--sweep-step", "90"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "synthetic"
    main(["robustness", *MODELS, "--out", str(out), *QUICK])
    return out


def test_report_json_shows_invariance_and_the_baseline_drop(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    invariant, plain = report["table"]
    assert invariant["model"] == MODELS[0] and invariant["train_rotation"] == "z"
    assert invariant["z/SO3"] == invariant["z/none"] and invariant["z/z"] == invariant["z/none"]
    assert invariant["max_logit_change_so3"] <= 1e-4 and invariant["flip_rate_so3"] == 0.0
    assert plain["z/none"] - plain["z/SO3"] >= 0.2 and plain["flip_rate_so3"] > 0.2
    model = report["models"][0]
    assert model["num_shapes"] == 48 and model["protocols"]["so3"]["evaluations"] == 96
    assert model["sweep"]["angles_degrees"] == [0.0, 90.0, 180.0, 270.0]
    assert len(model["protocols"]["none"]["per_class_accuracy"]) == len(report["data"]["class_names"]) == 8
    assert report["settings"]["seed"] == 0 and report["versions"]["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{64}", model["model"]["sha256"])


def test_html_is_self_contained_with_every_plot_embedded(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    assert len(images) == len(pngs) == 2
    assert {base64.b64decode(i) for i in images} == {(report_dir / p).read_bytes() for p in pngs}
    assert page.index("<table>") < page.index("<img") and "z/SO3" in page
    assert "http://" not in page and "https://" not in page


def test_rotations_are_seeded_per_shape_not_per_batch() -> None:
    settings = ProtocolSettings(n_rotations=3, seed=5)
    both = rotation_table(torch.tensor([4, 9]), "so3", settings, "z")
    alone = rotation_table(torch.tensor([9]), "so3", settings, "z")
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])
    z = rotation_table(torch.tensor([1]), "z", settings, "y")[0]
    assert torch.allclose(z[:, 1, 1], torch.ones(3, dtype=torch.float64))


def test_existing_folder_is_never_overwritten_silently(report_dir: Path, capsys: pytest.CaptureFixture) -> None:
    before = (report_dir / "report.json").read_text()
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(["robustness", MODELS[1], "--out", str(report_dir), *QUICK])
    assert (report_dir / "report.json").read_text() == before


def test_a_crash_mid_report_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> list:
        raise RuntimeError("plotting crashed")

    monkeypatch.setattr(report_module, "_plots", broken)
    with pytest.raises(RuntimeError, match="plotting crashed"):
        run_robustness([MODELS[0]], tmp_path / "out", max_samples=8,
                       settings=ProtocolSettings(n_rotations=1, sweep_step=180))
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_get_one_clear_message(tmp_path: Path) -> None:
    from pointgeo.hub import fetch

    forty = torch.load(fetch(MODELS[1]), weights_only=True)
    forty["hyper_parameters"]["num_classes"] = 40
    forty["state_dict"] = {k: v for k, v in forty["state_dict"].items() if "head.4" not in k}
    torch.save(forty, tmp_path / "forty.ckpt")
    with pytest.raises(SystemExit, match="unknown pretrained checkpoint"):
        main(["robustness", "tinvnn_pointnet.synthetc_z", "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="no checkpoint file"):
        main(["robustness", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="predicts 8 classes but the data has 40"):
        main(["robustness", MODELS[0], "--data", "modelnet40/cls-pointnet-z", "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match=r"modelnet40 \(normal_resampled\) is not in .*modelnet40_normal_resampled\.zip"):
        main(["robustness", str(tmp_path / "forty.ckpt"), "--data", "modelnet40/cls-pointnet-z",
              "--out", str(tmp_path / "e")])
    with pytest.raises(ReportExistsError):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x").write_text("keep me")
        run_robustness([MODELS[0]], tmp_path / "d")
    assert (tmp_path / "d" / "x").read_text() == "keep me"

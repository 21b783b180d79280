"""Robustness reports of the two shipped classifiers: protocols, sweep, measured invariance, HTML, seeding, the
report folder's safety, and one clear message for each kind of bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from pointgeo.robustness import ProtocolSettings, ReportExistsError, rotation_table, run_robustness
from pointgeo.robustness import output as output_module
from pointgeo.robustness.command import main
from pointgeo.robustness.protocol import rotate_batch

MODELS = ["tinvnn_pointnet.synthetic_z", "pointnet.synthetic_z"]
QUICK = ["--max-samples", "48", "--n-rotations", "2", "--sweep-step", "90"]
TINY = {"max_samples": 8, "settings": ProtocolSettings(n_rotations=1, sweep_step=180)}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "synthetic"
    main([*MODELS, "--out", str(out), *QUICK])
    return out


@pytest.fixture(scope="module")
def report(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


def test_invariant_model_shows_no_change_and_the_baseline_drops(report: dict) -> None:
    invariant, plain = report["table"]
    assert invariant["model"] == MODELS[0] and invariant["train_rotation"] == "z" and report["metric"] == "accuracy"
    assert invariant["z/SO3"] == invariant["z/z"] == invariant["z/none"] > 0.9
    assert invariant["max_logit_change_so3"] <= 1e-4 and invariant["flip_rate_so3"] == 0.0
    assert report["models"][0]["protocols"]["so3"]["invariant_within_tolerance"] is True
    assert plain["z/none"] - plain["z/SO3"] >= 0.3 and plain["flip_rate_so3"] > 0.3
    assert plain["max_logit_change_so3"] > 1.0
    assert report["models"][1]["protocols"]["so3"]["invariant_within_tolerance"] is False


def test_json_holds_protocols_sweep_per_class_and_identity(report: dict) -> None:
    model = report["models"][1]
    assert model["num_shapes"] == report["data"]["evaluated_shapes"] == 48
    assert [model["protocols"][m]["evaluations"] for m in ("none", "z", "so3")] == [48, 96, 96]
    assert "max_logit_change" not in model["protocols"]["none"]
    so3 = model["protocols"]["so3"]
    assert 0 <= so3["mean_logit_change"] <= so3["max_logit_change"]
    assert list(so3["per_class_accuracy"]) == report["data"]["class_names"] and len(report["data"]["class_names"]) == 8
    seen = [v for v in so3["per_class_accuracy"].values() if v is not None]
    assert so3["mean_class_accuracy"] == pytest.approx(sum(seen) / len(seen))
    sweep = model["sweep"]
    assert sweep["angles_degrees"] == [0.0, 90.0, 180.0, 270.0]
    assert sweep["x"][0] == sweep["y"][0] == sweep["z"][0] == model["protocols"]["none"]["accuracy"]
    assert min(sweep["x"][1], sweep["y"][1]) < sweep["z"][0] - 0.3  # trained about z only: tipping it over hurts
    assert report["settings"]["seed"] == 0 and report["settings"]["n_rotations"] == 2
    assert report["versions"]["torch"] == torch.__version__ and report["data"]["up_axis"] == "z"
    identity = model["model"]
    assert identity["registry_name"] == MODELS[1] and identity["train_rotation"] == "z"
    assert identity["sha256"] == hashlib.sha256(Path(identity["checkpoint"]).read_bytes()).hexdigest()
    assert report["data"]["settings"]["num_points"] == 256


def test_html_is_self_contained_with_every_plot_embedded(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    pngs = sorted(report_dir.glob("*.png"))
    assert len(images) == len(pngs) == 3
    assert {base64.b64decode(i) for i in images} == {p.read_bytes() for p in pngs}
    assert page.index("<table>") < page.index("<img") and "z/SO3" in page and "Measured invariance" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_rotations_are_seeded_per_shape_not_per_batch() -> None:
    settings = ProtocolSettings(n_rotations=3, seed=5)
    both = rotation_table(torch.tensor([4, 9]), "so3", settings, "z")
    alone = rotation_table(torch.tensor([9]), "so3", settings, "z")
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])
    assert not torch.equal(both, rotation_table(torch.tensor([4, 9]), "so3", ProtocolSettings(3, seed=6), "z"))
    about_y = rotation_table(torch.tensor([1]), "z", settings, "y")[0]
    assert torch.allclose(about_y[:, 1, 1], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(about_y @ about_y.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


def test_positions_and_normals_rotate_together_and_the_rotation_is_recorded() -> None:
    pos = torch.randn(2, 5, 3)
    normal = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    first = rotation_table(torch.tensor([0, 1]), "so3", ProtocolSettings(1), "z")[:, 0]
    second = rotation_table(torch.tensor([2, 3]), "so3", ProtocolSettings(1), "z")[:, 0]
    batch = {"pos": pos, "normal": normal, "rotation": first.float(), "label": torch.tensor([1, 2])}
    turned = rotate_batch(batch, second)
    assert turned["pos"].dtype == torch.float32 and turned["label"] is batch["label"]
    assert torch.allclose(turned["pos"], pos @ second.float().transpose(1, 2), atol=1e-6)
    assert torch.allclose(turned["normal"], normal @ second.float().transpose(1, 2), atol=1e-6)
    assert torch.allclose(turned["rotation"].double(), second @ first, atol=1e-6)
    assert torch.equal(batch["pos"], pos)  # the unrotated batch is left alone


def test_figures_do_not_depend_on_the_batch_size(report: dict, tmp_path: Path) -> None:
    again = run_robustness([MODELS[1]], tmp_path / "r", batch_size=20, max_samples=48,
                           settings=ProtocolSettings(n_rotations=2, sweep_step=90))
    first, second = report["models"][1], again["models"][0]
    for mode in ("none", "z", "so3"):
        assert second["protocols"][mode]["accuracy"] == first["protocols"][mode]["accuracy"]
    assert second["sweep"] == first["sweep"]
    assert second["protocols"]["so3"]["max_logit_change"] == pytest.approx(
        first["protocols"]["so3"]["max_logit_change"], rel=1e-4)


def test_existing_folders_are_never_overwritten_silently(report_dir: Path, tmp_path: Path) -> None:
    before = (report_dir / "report.json").read_text()
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main([MODELS[1], "--out", str(report_dir), *QUICK])
    assert (report_dir / "report.json").read_text() == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ReportExistsError, match="holds no report.json"):
        run_robustness([MODELS[0]], mine, overwrite=True, **TINY)
    assert (mine / "notes.txt").read_text() == "keep me"
    previous = tmp_path / "previous"
    run_robustness([MODELS[0]], previous, **TINY)
    replaced = run_robustness([MODELS[1]], previous, overwrite=True, **TINY)
    assert json.loads((previous / "report.json").read_text()) == replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "previous"]  # no temporary folder left


def test_a_crash_mid_report_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("html crashed")

    monkeypatch.setattr(output_module, "_html", broken)  # report.json and the plots are written by then
    with pytest.raises(RuntimeError, match="html crashed"):
        run_robustness([MODELS[0]], tmp_path / "out", **TINY)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    run_robustness([MODELS[0]], tmp_path / "out", **TINY)
    before = (tmp_path / "out" / "report.json").read_text()
    monkeypatch.setattr(output_module, "_html", broken)
    with pytest.raises(RuntimeError, match="html crashed"):
        run_robustness([MODELS[1]], tmp_path / "out", overwrite=True, **TINY)
    assert (tmp_path / "out" / "report.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _forty_class_checkpoint(path: Path) -> Path:
    from pointgeo.hub import fetch
    from pointgeo.tasks import ClassificationTask

    ckpt = torch.load(fetch(MODELS[1]), weights_only=True)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    ckpt["hyper_parameters"]["num_classes"] = 40
    ckpt["state_dict"] = ClassificationTask(**{**hparams, "num_classes": 40}).state_dict()
    torch.save(ckpt, path)
    return path


def test_bad_inputs_get_one_clear_message(tmp_path: Path) -> None:
    forty = _forty_class_checkpoint(tmp_path / "forty.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    wrong_weights = tmp_path / "wrong.ckpt"
    ckpt = torch.load(forty, weights_only=True)
    ckpt["hyper_parameters"]["num_classes"] = 8
    torch.save(ckpt, wrong_weights)
    out = str(tmp_path / "out")
    cases = [
        (["tinvnn_pointnet.synthetc_z"], "unknown pretrained checkpoint .*did you mean"),
        ([str(tmp_path / "missing.ckpt")], "no checkpoint file"),
        ([str(corrupt)], "not a readable checkpoint"),
        ([str(wrong_weights)], "weights do not fit its network 'pointnet'"),
        ([MODELS[0], "--data", "modelnet40/cls-pointnet-z"], "predicts 8 classes but the data has 40"),
        ([str(forty), "--data", "modelnet40/cls-pointnet-z"],
         r"modelnet40 \(normal_resampled\) is not in .*modelnet40_normal_resampled\.zip"),
        ([MODELS[0], "--data", "no/such-config"], "no config file or shipped config named 'no/such-config'"),
        ([MODELS[0], "--n-rotations", "0"], "n_rotations must be a positive integer"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", out])
        assert str(exc.value).startswith("pointgeo robustness: ") and re.search(message, str(exc.value)), exc.value
    assert not Path(out).exists()


def test_rotate_batch_moves_what_the_declaration_says() -> None:
    from pointgeo.geometry import POINT_CLOUD_FIELDS, FieldSpec

    rotation = rotation_table(torch.tensor([0, 1]), "so3", ProtocolSettings(1), "z")[:, 0]
    batch = {"pos": torch.randn(2, 5, 3), "normal": torch.randn(2, 5, 3), "velocity": torch.randn(2, 5, 3)}
    plain = rotate_batch(batch, rotation)
    assert plain["velocity"] is batch["velocity"]  # undeclared: shared, unchanged
    declared = rotate_batch(batch, rotation, POINT_CLOUD_FIELDS.merged(FieldSpec(vectors=("velocity",))))
    assert torch.equal(declared["velocity"], (batch["velocity"].double() @ rotation.transpose(1, 2)).float())
    assert torch.equal(declared["pos"], plain["pos"])

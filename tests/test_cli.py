"""The pointgeo command end to end on tiny settings: train (and its rotated tests), resume, errors, listing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointgeo.cli import main, shipped_config

TINY = [
    "--data.init_args.num_train", "48", "--data.init_args.num_test", "16", "--data.init_args.num_points", "32",
    "--data.init_args.batch_size", "8",
    "--model.init_args.network_kwargs", '{"channels": [8, 16], "head": [8]}',
    "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
]


def test_train_with_the_default_config_prints_both_rotated_accuracies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["train", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *TINY])
    out = capsys.readouterr().out
    assert "test rotation | accuracy" in out
    assert "none |" in out and "so3 |" in out
    assert list(tmp_path.glob("**/last.ckpt")), "no last.ckpt written"


def test_resuming_from_last_checkpoint_continues_the_run(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    main(["train", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(first), *TINY])
    last = next(first.glob("**/last.ckpt"))
    steps = torch.load(last, weights_only=True)["global_step"]
    main(["train", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(second), "--ckpt_path", str(last),
          *TINY])
    resumed = torch.load(next(second.glob("**/last.ckpt")), weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps


def test_shipped_configs_resolve_by_name() -> None:
    path = shipped_config("synthetic/cls-pointnet-z")
    assert path is not None and path.is_file()
    assert shipped_config("synthetic/does-not-exist") is None


def test_bad_arguments_and_commands_fail_clearly(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--trainer.max_epochs", "many"])
    assert exc.value.code != 0
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err


def test_models_lists_the_registry_and_help_is_light() -> None:
    out = subprocess.run([sys.executable, "-m", "pointgeo", "models", "tinvnn*"], capture_output=True, text=True,
                         check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == ["tinvnn_dgcnn", "tinvnn_pointnet", "tinvnn_pointnet_seg"] and "invariant" in out
    out = subprocess.run([sys.executable, "-m", "pointgeo", "models", "risurconv_cls"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("risurconv_cls") and "float64 guaranteed on: box, ellipsoid," in out
    assert "float64 only on mirror_symmetric: FPS" in out and "not guaranteed on grid_cylinder: " in out
    code = "import sys, pointgeo.cli; pointgeo.cli.main(['--help']); print('torch' in sys.modules)"
    helped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: pointgeo" in helped and helped.strip().endswith("False")

"""The pointgeo command end to end on tiny settings: train (and its rotated tests), resume, errors, listing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from pointgeo.cli import main, shipped_config
from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.lightning_cli import ResumeMismatchError, check_resume_matches
from pointgeo.tasks import ClassificationTask

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


def max_state_difference(a: Any, b: Any, where: str = "") -> float:
    """The largest |a - b| over the tensors of two nested checkpoint structures (which must have the same keys,
    shapes and non-tensor values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        return max((max_state_difference(a[k], b[k], f"{where}.{k}") for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        return max((max_state_difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))), default=0.0)
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0.0


def training_state(path: Path) -> dict[str, Any]:
    """What a resumed run must reproduce: weights, optimizer and schedule state, progress counters."""
    ckpt = torch.load(path, weights_only=True)
    return {key: ckpt[key] for key in ("state_dict", "optimizer_states", "lr_schedulers", "epoch", "global_step")}


def test_resuming_with_more_epochs_follows_the_longer_runs_schedule(tmp_path: Path) -> None:
    """1 epoch, then resumed to 2, equals 2 epochs at once: the cosine schedule follows the new horizon (its
    learning rate after epoch 1 is the 2-epoch curve's, not a restart at the base rate) and the data order and
    augmentations are functions of (seed, epoch)."""
    first, full = tmp_path / "a", tmp_path / "full"
    main(["train", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(full), *TINY])
    main(["train", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(first), *TINY])
    last = first / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=True)["global_step"]
    main(["train", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(first), "--ckpt_path", str(last),
          *TINY])
    resumed, uninterrupted = training_state(last), training_state(full / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps
    assert max_state_difference(resumed, uninterrupted) == 0.0
    assert resumed["lr_schedulers"][0]["_last_lr"] == [1e-5]  # the cosine's floor (min_lr) after the 2nd epoch


def test_resuming_from_another_configs_checkpoint_fails_with_one_clear_message(tmp_path: Path) -> None:
    dm = SyntheticShapesDataModule(num_train=48, num_test=8, num_points=32, batch_size=8)
    other = ClassificationTask("pointnet", num_classes=dm.num_classes,
                               network_kwargs={"channels": [8, 16], "head": [8]})
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(other, datamodule=dm)
    foreign = tmp_path / "pointnet.ckpt"
    trainer.save_checkpoint(foreign)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run"), *TINY,
              "--ckpt_path", str(foreign)])
    message = str(exc.value.code)
    assert message.startswith(f"pointgeo train: --ckpt_path {foreign} was written by another config")
    assert "model.network = 'tinvnn_pointnet' here, 'pointnet' in the checkpoint" in message
    assert not (tmp_path / "run").exists()  # refused before training started
    model, data = dict(other.hparams), dict(dm.hparams)
    check_resume_matches(foreign, "pointgeo.tasks.ClassificationTask", model, "SyntheticShapesDataModule",
                         {**data, "num_workers": 2})  # the same run (on more loader processes) resumes
    with pytest.raises(ResumeMismatchError, match=r"data.num_points = 64 here, 32 in the checkpoint"):
        check_resume_matches(foreign, "ClassificationTask", model, "SyntheticShapesDataModule",
                             {**data, "num_points": 64})
    with pytest.raises(ResumeMismatchError, match=r"data class ModelNet40DataModule here, SyntheticShapesDataModule"):
        check_resume_matches(foreign, "ClassificationTask", model, "ModelNet40DataModule", data)


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
    assert names == ["tinvnn_atoms", "tinvnn_dgcnn", "tinvnn_pointnet", "tinvnn_pointnet_seg"] and "invariant" in out
    atoms = out.split("tinvnn_dgcnn")[0]  # a potential lists molecules, never point-cloud shape classes
    assert "float64 guaranteed on: random molecules, CO2, H2O, C2H4" in atoms and "not guaranteed on CH4" in atoms
    assert "grid_cylinder" not in atoms
    out = subprocess.run([sys.executable, "-m", "pointgeo", "models", "risurconv_cls"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("risurconv_cls") and "float64 guaranteed on: box, ellipsoid," in out
    assert "float64 only on mirror_symmetric: FPS" in out and "not guaranteed on grid_cylinder: " in out
    code = "import sys, pointgeo.cli; pointgeo.cli.main(['--help']); print('torch' in sys.modules)"
    helped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: pointgeo" in helped and helped.strip().endswith("False")


RESUMABLE = [  # float64, deterministic kernels, dropout, per-sample augmentations and SO(3) rotations: all resumed
    "train", "--data.init_args.num_train", "48", "--data.init_args.num_test", "8", "--data.init_args.num_points", "48",
    "--data.init_args.batch_size", "8", "--data.init_args.train_rotation", "so3", "--data.init_args.jitter", "0.01",
    "--data.init_args.scale_augment", "[0.8, 1.25]",
    "--model.init_args.network_kwargs", '{"channels": [16, 32], "head": [16], "dropout": 0.5}',
    "--trainer.precision", "64-true", "--trainer.deterministic", "true", "--trainer.max_epochs", "3",
    "--trainer.logger", "false", "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
    "--last_checkpoint.every_n_train_steps", "1",
]
STEPS_PER_EPOCH = 5  # 40 training shapes (8 of the 48 validate) in batches of 8


def pointgeo_train(root: Path, log: str, *args: str) -> subprocess.Popen:
    """``pointgeo train`` with :data:`RESUMABLE` in a child process writing into ``root`` (its output into
    ``root/../{log}.log``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with (root.parent / f"{log}.log").open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "pointgeo", *RESUMABLE, "--trainer.default_root_dir", str(root),
                                 *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path) -> None:
    """Wait for a child run and fail with the end of its output unless it succeeded."""
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]


def stop_mid_epoch(proc: subprocess.Popen, last: Path, epoch: int, sig: signal.Signals) -> int:
    """Watch ``last`` (rewritten after every step); freeze the process (SIGSTOP) at each new version and send it
    ``sig`` at the first one written inside epoch ``epoch``. Returns the global step of that checkpoint."""
    seen = None
    while proc.poll() is None:
        try:
            version = (last.stat().st_ino, last.stat().st_mtime_ns)
        except FileNotFoundError:
            version = None
        if version is None or version == seen:
            time.sleep(0.002)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        seen = (last.stat().st_ino, last.stat().st_mtime_ns)
        ckpt = torch.load(last, weights_only=True)
        if ckpt["epoch"] == epoch and ckpt["global_step"] % STEPS_PER_EPOCH != 0:
            os.kill(proc.pid, sig)
            os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=120)
            return ckpt["global_step"]
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError(f"the run ended (status {proc.returncode}) before a checkpoint inside epoch {epoch}")


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_state(tmp_path: Path) -> None:
    """SIGTERM inside epoch 1 (Lightning ends the step, last.ckpt is written), resume, SIGKILL inside epoch 2
    (nothing runs after the signal: the last step's last.ckpt is what is left), resume to the end: every weight,
    BatchNorm statistic, Adam moment and schedule value equals the uninterrupted run's in float64."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    uninterrupted = pointgeo_train(reference, "reference")
    terminated = pointgeo_train(run, "first")
    seen = stop_mid_epoch(terminated, last, 1, signal.SIGTERM)
    after_sigterm = torch.load(last, weights_only=True)["global_step"]
    assert terminated.returncode != 0 and "resume with --ckpt_path" in (tmp_path / "first.log").read_text()
    assert seen <= after_sigterm <= seen + 1 and after_sigterm % STEPS_PER_EPOCH != 0  # the step under way ends
    killed = pointgeo_train(run, "second", "--ckpt_path", str(last))
    after_sigkill = stop_mid_epoch(killed, last, 2, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL and torch.load(last, weights_only=True)["global_step"] == after_sigkill
    finish(pointgeo_train(run, "third", "--ckpt_path", str(last)), tmp_path / "third.log")
    finish(uninterrupted, tmp_path / "reference.log")
    final, expected = training_state(last), training_state(reference / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 3 * STEPS_PER_EPOCH and final["epoch"] == 2
    assert {t.dtype for t in final["state_dict"].values() if t.is_floating_point()} == {torch.float64}
    difference = max_state_difference(final, expected)  # weights, BatchNorm statistics, Adam moments, schedule
    print(f"SIGTERM after step {after_sigterm}, SIGKILL after step {after_sigkill}: max |difference| to the "
          f"uninterrupted run {difference:.1e}")
    assert difference <= 1e-10


def test_models_measure_prints_the_measured_table_and_rejects_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    main(["models", "tinvnn_pointnet", "--measure", "--trials", "1"])
    captured = capsys.readouterr()
    assert "### tinvnn_pointnet (classification, invariant, 32 points)" in captured.out
    rows = [line for line in captured.out.splitlines() if line.startswith("| ") and "shape class" not in line]
    assert len(rows) == 18 and all(len(line.split("|")) == 5 for line in rows)  # random + 17 synthetic classes
    assert "| grid_cylinder | " in captured.out and "MISMATCH" not in captured.out
    assert "tinvnn_pointnet box torch.float32:" in captured.err  # progress goes to stderr
    for args, message in ((["--trials", "0"], "--trials must be >= 1"), (["--data", "nowhere"], "is not a folder")):
        with pytest.raises(SystemExit, match=message):
            main(["models", "tinvnn_pointnet", "--measure", *args])
    with pytest.raises(SystemExit, match="no point-cloud network matches 'tinvnn_atoms'"):
        main(["models", "tinvnn_atoms", "--measure"])

"""LightningCLI wiring: data → model argument links, checkpoint defaults, and testing under several rotations."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

import pointgeo.datamodules  # noqa: F401  (short class names in configs)
import pointgeo.tasks  # noqa: F401

RESUME_FREE_DATA_KEYS = frozenset({"root", "num_workers", "test_rotation"})
"""Datamodule settings a resumed run may change: where the files are, the loader processes, the test protocol."""
LINKED_MODEL_KEYS = frozenset({"num_classes"})
"""Model arguments filled from the datamodule when the classes are built (compared through the data settings)."""


class ResumeMismatchError(ValueError):
    """``--ckpt_path`` names a checkpoint written by another model or data config than the one given."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each local checkpoint to a temporary name in its folder and moves it into place with ``os.replace``,
    so a process killed while saving (``last.ckpt`` every few steps) leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` every ``every_n_train_steps`` training steps (0: never inside an epoch) and at the end
    of every training epoch (after its validation), atomically: to a temporary name in the same folder, then
    ``os.replace``. ``pointgeo train --ckpt_path .../last.ckpt`` resumes from it mid-epoch.

    Args:
        every_n_train_steps: training steps between two checkpoints inside an epoch.
        dirpath: folder of ``last.ckpt`` (default: that of the trainer's first :class:`ModelCheckpoint`, else
            ``default_root_dir/checkpoints``).
    """

    def __init__(self, every_n_train_steps: int = 50, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0; got {every_n_train_steps}")
        self.every_n_train_steps = every_n_train_steps
        self.dirpath = dirpath

    def path(self, trainer: pl.Trainer) -> Path:
        """Where this callback writes ``last.ckpt`` for ``trainer``."""
        if self.dirpath is not None:
            return Path(self.dirpath) / "last.ckpt"
        folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        return Path(folders[0] if folders else Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt"

    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` now (every rank calls it; the global-zero rank writes the file)."""
        path = self.path(trainer)
        tmp = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; saying so keeps Lightning quiet
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("LastCheckpoint.save")

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.enable_validation:  # otherwise saved after the validation at the epoch's end
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):  # Lightning stops after the current step on SIGTERM
            self.save(trainer)
            rank_zero_info(f"stopped by SIGTERM after step {trainer.global_step}; resume with --ckpt_path "
                           f"{self.path(trainer)}")


class CpuTimeBudget(Callback):
    """Stops training once its training steps have used ``max_cpu_seconds`` of this process's CPU time.

    Lightning's ``max_time`` counts wall-clock time, which on a shared machine says more about the other jobs than
    about the run; this counts ``time.process_time()`` (every thread of the process) spent between the start and
    the end of each training batch (forward, backward and optimizer step; data loading, validation and checkpoints
    are not counted), so runs of different models with the same budget and the same thread count
    (``OMP_NUM_THREADS=1``) get the same compute. The budget is checked after each training batch; Lightning then
    validates once more and stops (the step that crosses the budget is finished, so a run overshoots it by at most
    one step). The CPU time used is kept in the checkpoint, so a resumed run continues the same budget. Under DDP
    the ranks stop together as soon as one has used its budget.

    Args:
        max_cpu_seconds: the budget, in CPU seconds (> 0).

    In a config: ``trainer.callbacks: [{class_path: pointgeo.lightning_cli.CpuTimeBudget, init_args:
    {max_cpu_seconds: 600}}]``.
    """

    def __init__(self, max_cpu_seconds: float) -> None:
        if not max_cpu_seconds > 0:
            raise ValueError(f"max_cpu_seconds must be > 0; got {max_cpu_seconds}")
        self.max_cpu_seconds = float(max_cpu_seconds)
        self.used = 0.0
        """CPU seconds used by training steps so far."""
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._start is None:
            return
        self.used += time.process_time() - self._start
        self._start = None
        stop = trainer.strategy.reduce_boolean_decision(self.used >= self.max_cpu_seconds, all=False)
        if stop and not trainer.should_stop:
            trainer.should_stop = True
            rank_zero_info(f"CPU-time budget reached: {self.used:.1f} s of {self.max_cpu_seconds:.1f} s after step "
                           f"{trainer.global_step}")

    def state_dict(self) -> dict[str, float]:
        return {"used": self.used}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.used = float(state_dict["used"])


class PointGeoCLI(LightningCLI):
    """LightningCLI with pointgeo's defaults.

    * ``data.num_classes`` and ``data.use_normals`` are linked into the model's arguments.
    * A :class:`ModelCheckpoint` (configurable as ``checkpoint``) keeps the best ``val/acc``; a
      :class:`LastCheckpoint` (``last_checkpoint``) writes ``last.ckpt`` every
      ``last_checkpoint.every_n_train_steps`` (default 50) training steps, at the end of every epoch and on
      SIGTERM, so ``--ckpt_path .../last.ckpt`` resumes a run killed in the middle of
      an epoch where it stopped (same weights, optimizer state, learning-rate schedule, data order and random
      draws as the uninterrupted run). Checkpoints are written atomically (:class:`AtomicCheckpointIO`).
    * ``pointgeo train --ckpt_path`` refuses, with one :class:`ResumeMismatchError`, a checkpoint written by
      another model or data config (:func:`check_resume_matches`).
    * An ``http(s)`` ``--ckpt_path`` is fetched by :func:`pointgeo.hub.resolve_ckpt_path` (verified download,
      ``weights_only`` check) and Lightning gets the local file.
    """

    def __init__(self, args: list[str], run: bool = True) -> None:
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best-{epoch:03d}",
        })
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.init_args.use_normals", "model.init_args.use_normals", apply_on="parse")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, fetch an ``http(s)`` ``--ckpt_path`` (verified download, ``weights_only`` check), then refuse a
        ``fit --ckpt_path`` of a checkpoint written by another config before Lightning merges the checkpoint's
        hyper-parameters into the model's (which swaps the network silently, or fails with a parser error).
        ``pointgeo`` hands its own command line over as ``args``, so Lightning's warning against giving both is
        silenced here."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)
        from pointgeo.hub import resolve_ckpt_path

        section = self.config.get(self.config.get("subcommand") or "")
        if section is not None and section.get("ckpt_path") is not None:
            section.ckpt_path = resolve_ckpt_path(section.ckpt_path)
        if self.config.get("subcommand") != "fit":
            return
        config = self.config["fit"]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(str(ckpt_path)).is_file():
            model, data = config["model"], config.get("data")
            check_resume_matches(Path(str(ckpt_path)), model.class_path, model.init_args.as_dict(),
                                 data.class_path if data else None, data.init_args.as_dict() if data else None)


def _shown(value: Any) -> str:
    return "(not set)" if value is _MISSING else repr(value)


_MISSING = object()


def check_resume_matches(path: Path, model_class: str, model_args: dict[str, Any], data_class: str | None = None,
                         data_args: dict[str, Any] | None = None) -> None:
    """Raise :class:`ResumeMismatchError` unless the checkpoint ``path`` was written by the task class
    ``model_class`` (a class path or name) with the arguments ``model_args`` and by the datamodule ``data_class``
    with ``data_args`` (both as configured; :data:`RESUME_FREE_DATA_KEYS` and the data-linked ``num_classes`` may
    differ): resuming continues a run, it does not start another one from foreign weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ResumeMismatchError(f"--ckpt_path {path} is not a Lightning checkpoint (no state_dict)")
    meta = ckpt.get("pointgeo") or {}
    differences = []
    for what, here, saved in (("model class", model_class, meta.get("task_class")),
                              ("data class", data_class, meta.get("datamodule_class"))):
        if here is not None and saved is not None and here.rsplit(".", 1)[-1] != saved:
            differences.append(f"{what} {here.rsplit('.', 1)[-1]} here, {saved} in the checkpoint")
    sections = [("model", model_args, ckpt.get("hyper_parameters") or {}, LINKED_MODEL_KEYS)]
    if data_args is not None and "datamodule_hyper_parameters" in ckpt:
        sections.append(("data", data_args, ckpt["datamodule_hyper_parameters"], RESUME_FREE_DATA_KEYS))
    for section, here, saved, free in sections:
        for key in sorted((set(here) | set(saved)) - free):
            mine, theirs = here.get(key, _MISSING), saved.get(key, _MISSING)
            if not key.startswith("_") and not _same(mine, theirs):
                differences.append(f"{section}.{key} = {_shown(mine)} here, {_shown(theirs)} in the checkpoint")
    if differences:
        raise ResumeMismatchError(
            f"--ckpt_path {path} was written by another config and cannot resume this one: " + "; ".join(differences)
            + ". Resume with the config the checkpoint was trained with (the config.yaml saved in its run folder)."
        )


def _same(a: Any, b: Any) -> bool:
    """Equal as configured values (tuples and lists alike)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_under_rotations(cli: LightningCLI, modes: tuple[str, ...]) -> dict[str, float]:
    """Test the best checkpoint of a finished fit under each rotation protocol and print a small table.

    The table's columns are the task's ``test_columns`` (``(metric, label, scale, unit)``; potentials: energy and
    force MAE in meV and meV/Å), by default its ``test_metric`` in %. Returns ``test_metric`` per protocol."""
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    if trainer.interrupted or not hasattr(data, "set_test_rotation"):
        return {}
    best = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor]
    ckpt = best[0].best_model_path if best else ""
    key = getattr(model, "test_metric", "test/acc")
    name = "accuracy" if key == "test/acc" else key.split("/", 1)[1]
    columns = getattr(model, "test_columns", None) or ((key, name, 100.0, "%"),)
    results, table = {}, {}
    for mode in modes:
        data.set_test_rotation(mode)
        metrics = trainer.test(model, datamodule=data, ckpt_path=ckpt or None, verbose=False)
        results[mode] = float(metrics[0][key])
        table[mode] = [float(metrics[0][metric]) * scale for metric, _, scale, _ in columns]
    if trainer.is_global_zero:
        print(f"\nbest checkpoint: {ckpt or '(current weights)'}")
        print("test rotation | " + " | ".join(label for _, label, _, _ in columns))
        for mode, values in table.items():
            cells = [f"{v:{max(6, len(label) - len(unit) - 1)}.2f} {unit}"
                     for v, (_, label, _, unit) in zip(values, columns)]
            print(f"{mode:>13} | " + " | ".join(cells))
    return results

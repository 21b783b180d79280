"""LightningCLI wiring: data → model argument links, checkpoint defaults, and testing under several rotations."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import pointgeo.datamodules  # noqa: F401  (short class names in configs)
import pointgeo.tasks  # noqa: F401


class PointGeoCLI(LightningCLI):
    """LightningCLI with pointgeo's defaults.

    * ``data.num_classes`` and ``data.use_normals`` are linked into the model's arguments.
    * A :class:`ModelCheckpoint` (configurable as ``checkpoint``) keeps the best ``val/acc`` and ``last.ckpt``, so
      ``--ckpt_path .../last.ckpt`` resumes an interrupted run.
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
        parser.set_defaults({
            "checkpoint.monitor": "val/acc",
            "checkpoint.mode": "max",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-{epoch:03d}",
        })
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.init_args.use_normals", "model.init_args.use_normals", apply_on="parse")

    def before_instantiate_classes(self) -> None:
        from pointgeo.hub import resolve_ckpt_path

        section = self.config.get(self.subcommand) if self.subcommand else None
        if section is not None and section.get("ckpt_path") is not None:
            section.ckpt_path = resolve_ckpt_path(section.ckpt_path)


def test_under_rotations(cli: LightningCLI, modes: tuple[str, ...]) -> dict[str, float]:
    """Test the best checkpoint of a finished fit under each rotation protocol and print a small table.

    The table's columns are the task's ``test_columns`` (``(metric, label, scale, unit)``; potentials: energy and
    force MAE in meV and meV/Å), by default its ``test_metric`` in %. Returns ``test_metric`` per protocol."""
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    if trainer.interrupted or not hasattr(data, "set_test_rotation"):
        return {}
    ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
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

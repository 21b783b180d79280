"""The robustness run: load the models, build the test data, evaluate every protocol and write the report folder
(``report.json`` first, then the plots, then ``report.html``; see :mod:`pointgeo.robustness.output`)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pointgeo import __version__
from pointgeo.datamodules.settings import build_datamodule
from pointgeo.robustness.evaluators import Batch, Evaluator, evaluator_for
from pointgeo.robustness.loading import LoadedModel, check_same_data, load_model, read_data_config
from pointgeo.robustness.output import ReportExistsError, check_target, write_report
from pointgeo.robustness.protocol import PIECEWISE, PROTOCOLS, ProtocolSettings, evaluate
from pointgeo.robustness.registration import FPFH_NAME, AngleSettings

PROTOCOL_LABEL = {"none": "none", "z": "z", "so3": "SO3", PIECEWISE: "piecewise"}

__all__ = ["PROTOCOL_LABEL", "ReportExistsError", "run_robustness", "table_row"]


def _test_batches(dm: Any, device: str, dtype: torch.dtype, max_samples: int | None) -> tuple[Iterator[Batch], int]:
    """The unrotated test batches (at most ``max_samples`` shapes) on ``device``, floats in ``dtype``, and their
    number."""
    loader = dm.test_dataloader()
    size = len(loader.dataset) if max_samples is None else min(max_samples, len(loader.dataset))
    batch_size = loader.batch_size or 1

    def batches() -> Iterator[Batch]:
        seen = 0
        for batch in loader:
            if seen >= size:
                return
            keep = size - seen
            seen += min(keep, batch["pos"].shape[0])
            yield {k: v[:keep].to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                   for k, v in batch.items()}

    return batches(), -(-size // batch_size)


def _prepare_data(
    models: list[LoadedModel], data_config: str | None, batch_size: int, num_workers: int
) -> tuple[Any, list[Evaluator]]:
    """The test datamodule, checked against every model, with normals on when a model needs them."""
    override = read_data_config(data_config) if data_config else None
    if override is None:
        check_same_data(models)
    dm = build_datamodule(models[0].data, override)
    kinds = {m.kind for m in models}
    if len(kinds) > 1:
        listing = ", ".join(f"{m.spec} ({m.kind})" for m in models)
        raise ValueError(f"one report compares models of one task; got {listing}")
    evaluators = [evaluator_for(m.task, m.kind, m.spec) for m in models]
    for ev in evaluators:
        ev.check(dm)
    needs_normals = [m.spec for m in models if m.identity["use_normals"]]
    dm.use_normals = dm.use_normals or bool(needs_normals)
    dm.batch_size, dm.num_workers = batch_size, num_workers
    dm.set_test_rotation("none")
    dm.prepare_data()
    dm.setup("test")
    try:
        dm.dataset("test")
    except ValueError as exc:
        raise ValueError(f"{type(dm).__name__} cannot serve {', '.join(needs_normals) or 'the models'}: {exc}") from exc
    return dm, evaluators


def run_robustness(
    models: list[str],
    out: str | Path,
    *,
    data_config: str | None = None,
    settings: ProtocolSettings | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "cpu",
    double: bool = False,
    overwrite: bool = False,
    max_samples: int | None = None,
    registration: AngleSettings | None = None,
) -> dict[str, Any]:
    """Evaluate ``models`` side by side under the rotation protocols and write the report folder ``out``.

    Args:
        models: pretrained names, checkpoint paths or ``file://`` URLs, all of one task kind.
        out: the report folder; it must not exist or be empty unless ``overwrite``.
        data_config: a config (path or shipped name) whose ``data`` section gives the test data; default: the first
            model's stored data settings (every model must then come from the same dataset).
        settings: rotations per shape, sweep bin and seed.
        batch_size, num_workers: of the test loader.
        device: where the models run (``cpu``, ``cuda``, ``cuda:1``, ...).
        double: evaluate in float64 instead of float32.
        overwrite: replace an existing report folder.
        max_samples: evaluate only the first ``max_samples`` test shapes.
        registration: angle bins, rotations per bin and rotated cloud of a registration report (models with
            ``register_pair``, and the built-in ``fpfh_ransac``; :mod:`pointgeo.robustness.registration`).

    Returns:
        The report, as written to ``report.json``.
    """
    settings = settings or ProtocolSettings()
    if not models:
        raise ValueError("give at least one model")
    if batch_size < 1 or (max_samples is not None and max_samples < 1):
        raise ValueError(f"batch_size and max_samples must be positive; got {batch_size} and {max_samples}")
    out = Path(out)
    check_target(out, overwrite)
    dtype = torch.float64 if double else torch.float32
    loaded = [load_model(spec, dtype, device) for spec in models if spec != FPFH_NAME]
    if FPFH_NAME in models or any(callable(getattr(m.task, "register_pair", None)) for m in loaded):
        return _registration_report(models, loaded, out, data_config, registration or AngleSettings(seed=settings.seed),
                                    overwrite, max_samples)
    if any(m.kind == "potential" for m in loaded):
        return _potential_report(loaded, out, data_config, settings, dtype, device, overwrite, max_samples)
    dm, evaluators = _prepare_data(loaded, data_config, batch_size, num_workers)
    batches, total = _test_batches(dm, device, dtype, max_samples)
    figures = evaluate(evaluators, batches, dm.class_names, dm.up_axis, settings, dtype, total=total,
                       fields=dm.fields)
    results = [{"model": m.identity, **f} for m, f in zip(loaded, figures)]
    report = {
        "versions": {"pointgeo": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "platform": platform.platform()},
        "settings": {"n_rotations": settings.n_rotations, "sweep_step_degrees": settings.sweep_step,
                     "seed": settings.seed, "rotation_seeds": "sample_seed(seed, shape index, protocol index, "
                     "rotation index), protocols " + ", ".join((*PROTOCOLS, PIECEWISE)),
                     "piecewise_translation_rms_radii": settings.piecewise_translation,
                     "dtype": str(dtype), "device": device,
                     "batch_size": batch_size, "max_samples": max_samples},
        "data": {"class_path": f"{type(dm).__module__}.{type(dm).__name__}", "config": data_config,
                 "up_axis": dm.up_axis, "class_names": list(dm.class_names), "test_shapes": len(dm.dataset("test")),
                 "evaluated_shapes": figures[0]["num_shapes"],
                 "settings": {**_plain(dict(dm.hparams)), "use_normals": dm.use_normals}},
        "task": loaded[0].kind,
        "metric": figures[0]["metric"],
        "table": [table_row(r) for r in results],
        "models": results,
    }
    write_report(report, out, overwrite=overwrite)
    return report


def _potential_report(loaded: list[LoadedModel], out: Path, data_config: str | None, settings: ProtocolSettings,
                      dtype: torch.dtype, device: str, overwrite: bool, max_samples: int | None) -> dict[str, Any]:
    """The report of potential checkpoints (:mod:`pointgeo.robustness.potentials`)."""
    from pointgeo.robustness.potentials import run_potential_robustness

    if any(m.kind != "potential" for m in loaded):
        raise ValueError("one report compares models of one task; got " +
                         ", ".join(f"{m.spec} ({m.kind})" for m in loaded))
    override = read_data_config(data_config) if data_config else None
    if override is None:
        check_same_data(loaded)
    dm = build_datamodule(loaded[0].data, override)
    return run_potential_robustness(loaded, dm, out, data_config=data_config, settings=settings, dtype=dtype,
                                    device=device, overwrite=overwrite, max_samples=max_samples)


def _registration_report(specs: list[str], loaded: list[LoadedModel], out: Path, data_config: str | None,
                         settings: AngleSettings, overwrite: bool, max_samples: int | None) -> dict[str, Any]:
    """The report of registration models (:mod:`pointgeo.robustness.registration`): checkpoints whose task has
    ``register_pair`` and the built-in ``fpfh_ransac``, on the first checkpoint's data or ``data_config``'s."""
    from pointgeo.robustness.registration import FPFHRegistrar, run_registration_robustness

    unable = [m.spec for m in loaded if not callable(getattr(m.task, "register_pair", None))]
    if unable:
        raise ValueError(f"one report compares models of one task; {', '.join(unable)} cannot register pairs (no "
                         f"register_pair), unlike the other registration models given")
    override = read_data_config(data_config) if data_config else None
    if override is None and not loaded:
        raise ValueError(f"{FPFH_NAME} has no data of its own: pass --data, a registration data config such as "
                         f"threedmatch/data/pairs-cpu")
    if override is None:
        check_same_data(loaded)
    dm = build_datamodule(loaded[0].data if loaded else {}, override)
    by_spec = {m.spec: m for m in loaded}
    fpfh = FPFHRegistrar(voxel_size=settings.fpfh_voxel_size, seed=settings.seed)
    registrars = [(spec, fpfh, {"spec": spec, "network": "FPFH + RANSAC + ICP (Open3D)", "task": "registration",
                                "settings": {"voxel_size": fpfh.voxel_size, "max_iterations": fpfh.max_iterations,
                                             "refine": fpfh.refine, "seed": fpfh.seed}})
                  if spec == FPFH_NAME else (spec, by_spec[spec].task, by_spec[spec].identity) for spec in specs]
    return run_registration_robustness(registrars, dm, out, data_config=data_config, settings=settings,
                                       overwrite=overwrite, max_samples=max_samples)


LOADER_KEYS = ("batch_size", "num_workers", "test_rotation")
"""Datamodule settings that a robustness run replaces (the runner rotates the unrotated test split itself)."""


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Data settings as JSON values (tuples as lists, paths as strings), private and loader keys dropped."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)

    return {k: plain(v) for k, v in settings.items() if not k.startswith("_") and k not in LOADER_KEYS}


def table_row(result: dict[str, Any]) -> dict[str, Any]:
    """One line of the comparison table: the score per protocol labelled ``train/test`` (``train/piecewise`` on data
    with parts), the SO(3) invariance figures, and for a network predicting its own partition the measured
    piecewise figures (``measured_*``, means over the test batches)."""
    model = result["model"]
    train = PROTOCOL_LABEL.get(model["train_rotation"], model["train_rotation"])
    row = {"model": model["spec"], "network": model["network"], "train_rotation": train}
    modes = [m for m in (*PROTOCOLS, PIECEWISE) if m in result["protocols"]]
    for mode in modes:
        row[f"{train}/{PROTOCOL_LABEL[mode]}"] = result["protocols"][mode][result["metric"]]
    for mode in modes:
        for key, value in result["protocols"][mode].items():
            if key.startswith(result["metric"] + "_"):  # the same score under another convention
                row[f"{train}/{PROTOCOL_LABEL[mode]} ({key[len(result['metric']) + 1:]})"] = value
    for mode in ("so3", PIECEWISE)[: 1 + (PIECEWISE in modes)]:
        row[f"max_logit_change_{mode}"] = result["protocols"][mode]["max_logit_change"]
        row[f"flip_rate_{mode}"] = result["protocols"][mode]["flip_rate"]
    frame_error = result["protocols"]["so3"]["mean_orientation_error"]
    if frame_error is not None:  # learned invariance (PaRot): how far its orientations are from equivariant
        row["orientation_error_so3"] = frame_error
    measured = result.get("measured_piecewise")
    if measured:  # the network's own partition: worst error over the batches, mean accuracies and part counts
        for key in TABLE_MEASURED:
            value = measured["max_over_batches" if key.startswith("max") or key.startswith("given_max") else
                             "mean_over_batches"].get(key)
            if value is not None:
                row[f"measured_{key}"] = value
    return row


TABLE_MEASURED = ("max_relative_error", "given_max_relative_error", "partition_accuracy", "moved_partition_accuracy",
                  "predicted_parts")
"""Figures of :func:`pointgeo.testing.measure_apen_piecewise` the comparison table shows (all are in
``report.json``)."""

"""``pointgeo generate CKPT --num N --out DIR``: crystals from a generative checkpoint, CIF files and a report.

The checkpoint (a path, ``file://`` URL or pretrained name) is rebuilt by :func:`pointgeo.hub.rebuild_task`; it
must be a crystal generation model (``num_noise_levels`` and ``sample``, :class:`~pointgeo.generation.run.
CrystalSampler`). Generation is batched and resumable (:mod:`pointgeo.generation.run`), the report is written
after the last batch (:mod:`pointgeo.generation.report`); ``--property-model`` adds the property EMD and
``--optimize-starts`` the optimisation success rates (:mod:`pointgeo.generation.optimize`). Bad input ends with one
line ``pointgeo generate: <what is wrong>`` (``SystemExit``), never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pointgeo.download import ChecksumError, DownloadError

EXPECTED_ERRORS = (KeyError, ValueError, TypeError, FileNotFoundError, FileExistsError, DownloadError,
                   ChecksumError)


def load_sampler(spec: str, device: str) -> tuple[Any, dict[str, Any]]:
    """The generative task of ``spec`` (eval mode, on ``device``) and its identity (spec, sha256, task class,
    epoch, step, stored data settings).

    Raises:
        ValueError: the checkpoint is not a crystal generation model (or cannot be rebuilt: ``DatasetFileError``).
    """
    from pointgeo.datamodules.settings import public_settings  # noqa: PLC0415
    from pointgeo.download import sha256sum  # noqa: PLC0415
    from pointgeo.hub import fetch, load_checkpoint, rebuild_task  # noqa: PLC0415

    path = fetch(spec, progress=True)
    ckpt = load_checkpoint(path)
    meta = ckpt.get("pointgeo", {})
    task = rebuild_task(ckpt, spec)
    if not callable(getattr(task, "sample", None)) or not isinstance(getattr(task, "num_noise_levels", None), int):
        raise ValueError(f"{spec} is a {meta.get('task', 'classification')} checkpoint "
                         f"({type(task).__name__}), not a crystal generation model (CDVAE)")
    identity = {"spec": spec, "sha256": sha256sum(path), "task_class": type(task).__name__,
                "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
                "written_by_pointgeo": meta.get("version"),
                "data": dict(ckpt.get("datamodule_hyper_parameters", {})) or None}
    identity["data"] = None if identity["data"] is None else {
        "_class_path": identity["data"].get("_class_path"), **_plain(public_settings(identity["data"]))}
    return task.to(device).eval(), identity


def load_property_model(spec: str, device: str) -> tuple[Any, dict[str, Any]]:
    """The property model of ``spec`` (a checkpoint path, ``file://`` URL or pretrained name whose task has
    ``predict_property`` and a property head; eval mode, on ``device``) and its identity (spec, sha256)."""
    from pointgeo.download import sha256sum  # noqa: PLC0415
    from pointgeo.hub import fetch, load_checkpoint, rebuild_task  # noqa: PLC0415

    path = fetch(spec, progress=True)
    task = rebuild_task(load_checkpoint(path), spec)
    if not callable(getattr(task, "predict_property", None)) or not getattr(getattr(task, "net", None),
                                                                            "num_properties", 0):
        raise ValueError(f"--property-model {spec} ({type(task).__name__}) is not a property model: it needs "
                         "predict_property and a property head (a CDVAE trained with num_properties >= 1)")
    return task.to(device).eval(), {"spec": spec, "sha256": sha256sum(path)}


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON values (tuples as lists, anything else unusual as its string)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)

    return {k: plain(v) for k, v in settings.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pointgeo generate``."""
    from pointgeo.metrics.crystals import COV_CUTOFFS  # noqa: PLC0415

    parser.add_argument("checkpoint", help="checkpoint path, file:// URL or pretrained name of a CDVAE model")
    parser.add_argument("--num", type=int, required=True, help="number of crystals to generate")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (new, empty, or a previous run of the same command to resume)")
    parser.add_argument("--batch-size", type=int, default=100, help="crystals generated together (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="batch k draws from a generator seeded by (seed, k)")
    parser.add_argument("--reference", help="reference crystals for COV and property statistics: a CDVAE CSV file, "
                                            "DATASET:SPLIT (perov_5:test) or a split of the checkpoint's data (test)")
    parser.add_argument("--dataset", choices=sorted(COV_CUTOFFS),
                        help="the benchmark whose COV cut-offs apply (default: the reference's or the checkpoint's)")
    parser.add_argument("--property-model", metavar="CKPT",
                        help="property model for the property EMD and the optimisation success rates: a checkpoint "
                             "with a property head (e.g. a CDVAE trained on the benchmark's property; it may be the "
                             "generating checkpoint itself)")
    parser.add_argument("--optimize-starts", type=int, default=0, metavar="R",
                        help="also optimise the property in latent space from the first R reference crystals and "
                             "report SR5/SR10/SR15 (CDVAE: 100; needs --reference, --property-model and a benchmark)")
    parser.add_argument("--optimize-steps", type=int, default=5000, help="Adam steps per run (CDVAE: 5000)")
    parser.add_argument("--optimize-lr", type=float, default=1e-3, help="Adam learning rate (CDVAE: 1e-3)")
    parser.add_argument("--optimize-saved", type=int, default=10,
                        help="points of each path decoded and scored (CDVAE: 10)")
    parser.add_argument("--no-html", action="store_true", help="write metrics.json only, no report.html")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous generation with other settings in --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: list[str]) -> dict[str, Any]:
    """Run ``pointgeo generate`` with command-line ``args``; prints where the files are and the headline metrics;
    returns the metrics."""
    parser = argparse.ArgumentParser(
        prog="pointgeo generate",
        description="Generate crystals with a CDVAE checkpoint (annealed Langevin dynamics, batched, resumable): "
                    "DIR/cif/<index>.cif, DIR/manifest.json, then DIR/metrics.json and a self-contained "
                    "DIR/report.html.")
    add_arguments(parser)
    ns = parser.parse_args(args)
    from pointgeo.generation.optimize import OptimizationSettings, run_optimization  # noqa: PLC0415
    from pointgeo.generation.report import check_reference, load_reference, write_report  # noqa: PLC0415
    from pointgeo.generation.run import GenerationSettings, generate_crystals  # noqa: PLC0415

    try:
        sampler, identity = load_sampler(ns.checkpoint, ns.device)
        if ns.reference is not None:
            check_reference(ns.reference, identity.get("data"))
        prop_model, prop_identity = None, None
        if ns.property_model is not None:
            prop_model, prop_identity = load_property_model(ns.property_model, ns.device)
        if ns.optimize_starts and (ns.reference is None or prop_model is None):
            raise ValueError("--optimize-starts needs --reference (the starting crystals) and --property-model "
                             "(scores the decoded crystals)")
        if ns.optimize_starts:
            reference = load_reference(ns.reference, identity.get("data"))  # settings checked before generating
            opt_settings = OptimizationSettings(
                starts=ns.optimize_starts, steps=ns.optimize_steps, lr=ns.optimize_lr, saved=ns.optimize_saved,
                seed=ns.seed, dataset=ns.dataset or reference.dataset, reference=ns.reference,
                checkpoint_sha256=identity["sha256"], property_model_sha256=prop_identity["sha256"])
            if len(reference.crystals) < ns.optimize_starts:
                raise ValueError(f"--optimize-starts {ns.optimize_starts}: the reference holds only "
                                 f"{len(reference.crystals)} crystals")
        settings = GenerationSettings(num=ns.num, batch_size=ns.batch_size, seed=ns.seed,
                                      checkpoint_sha256=identity["sha256"],
                                      num_noise_levels=sampler.num_noise_levels)
        manifest = generate_crystals(sampler, ns.out, settings, identity, overwrite=ns.overwrite, device=ns.device,
                                     progress=not ns.no_progress)
        optimization = None
        if ns.optimize_starts:
            optimization = run_optimization(sampler, ns.out, reference.crystals, opt_settings, prop_model,
                                            device=ns.device, progress=not ns.no_progress)
        metrics = write_report(ns.out, manifest, reference=ns.reference, dataset=ns.dataset,
                               html_report=not ns.no_html, progress=not ns.no_progress, property_model=prop_model,
                               property_model_identity=prop_identity, optimization=optimization)
    except EXPECTED_ERRORS as exc:
        raise SystemExit(f"pointgeo generate: {exc.args[0] if exc.args else exc}") from exc
    print(summary(metrics, ns.out))
    return metrics


def summary(metrics: dict[str, Any], out: Path) -> str:
    """The lines printed at the end of a run."""
    from pointgeo.generation.report import metric_rows  # noqa: PLC0415

    counts = metrics["counts"]
    lines = [f"{counts['generated']} crystals in {out / 'cif'} ({counts['constructed']} constructed, "
             f"{counts['valid']} valid)"]
    lines += [f"  {name}: {value}" for name, value, _ in metric_rows(metrics) if value != "–"]
    lines.append(f"metrics: {out / 'metrics.json'}")
    if (out / "report.html").is_file() and metrics["report_settings"]["html"]:
        lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)

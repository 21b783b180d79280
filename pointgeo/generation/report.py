"""The report of a generation folder: ``metrics.json`` first, then a self-contained ``report.html``.

The metrics are CDVAE's generation metrics with the benchmark's definitions (:mod:`pointgeo.metrics.crystals`):
structure and composition validity over all generated crystals; with a reference set (the test split), COV-R /
COV-P with the dataset's cut-offs (:data:`~pointgeo.metrics.crystals.COV_CUTOFFS`) over all generated crystals, and
the earth mover's distances of density and number of elements between ``property_samples`` (1 000) random valid
generated crystals and all reference crystals (all valid ones when fewer, as the record says), and with a property
model (``--property-model``: a checkpoint with ``predict_property``, e.g. a CDVAE trained with a property head) the
distance of the property it predicts for both sets; with ``--optimize-starts`` the optimisation success rates
(:mod:`pointgeo.generation.optimize`). The HTML holds the
metric table beside the CDVAE paper's figures for the dataset, pictures of a few structures with their unit cells
(matplotlib, embedded as PNG) and the invalid crystals with their problems.
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pointgeo.generation.files import finite_or_none, write_json_atomic, write_text_atomic
from pointgeo.generation.run import REPORT_FILES, read_generated
from pointgeo.metrics.crystals import (
    COV_CUTOFFS,
    Crystal,
    EvaluatedCrystal,
    coverage,
    crystals_from_batch,
    evaluate,
    fingerprints,
    PropertyPredictor,
    property_statistics,
    validity,
)
from pointgeo.generation.optimize import PAPER_SR

METRICS_FORMAT = "pointgeo-generation-metrics/1"
PROPERTY_SAMPLES = 1000
"""Valid generated crystals of the property statistics (CDVAE's ``n_samples``)."""
PICTURES = 6
"""Structures drawn in the report."""
PAPER_CDVAE = {
    "perov_5": {"struct_valid": 1.0, "comp_valid": 0.9859, "cov_recall": 0.9945, "cov_precision": 0.9846,
                "wdist_density": 0.1258, "wdist_prop": 0.0264, "wdist_num_elems": 0.0628},
    "carbon_24": {"struct_valid": 1.0, "cov_recall": 0.9980, "cov_precision": 0.8308, "wdist_density": 0.1407,
                  "wdist_prop": 0.2850},
    "mp_20": {"struct_valid": 1.0, "comp_valid": 0.8670, "cov_recall": 0.9915, "cov_precision": 0.9949,
              "wdist_density": 0.6875, "wdist_prop": 0.2778, "wdist_num_elems": 1.432},
}
"""CDVAE's generation results (Xie et al., ICLR 2022, Table 3; 10 000 generated crystals against the test set)."""
SPLITS = ("train", "val", "test")


@dataclass
class Reference:
    """The crystals generated ones are compared with: where they came from (as given), the benchmark whose
    cut-offs apply (``None``: unknown) and the crystals."""

    source: str
    dataset: str | None
    crystals: list[Crystal]


def _crystals_of(arrays: dict[str, np.ndarray]) -> list[Crystal]:
    """The crystals of a processed split (``pointgeo.datamodules.crystals.process_csv``'s arrays)."""
    return crystals_from_batch(torch.from_numpy(arrays["frac"]), torch.from_numpy(arrays["z"]),
                               torch.from_numpy(arrays["lengths"]), torch.from_numpy(arrays["angles"]),
                               torch.from_numpy(arrays["natoms"]))


def check_reference(spec: str, data_settings: dict[str, Any] | None = None) -> None:
    """Refuse a ``--reference`` that :func:`load_reference` could not read, without reading it (so a long generation
    does not end in a bad option): ``ValueError`` / ``FileNotFoundError`` as :func:`load_reference` raises them."""
    from pointgeo.datamodules.crystals import BENCHMARKS  # noqa: PLC0415

    path = Path(spec)
    if path.suffix.lower() == ".csv" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--reference {spec}: no such file")
        return
    name, _, split = spec.rpartition(":")
    if name in BENCHMARKS and split in SPLITS:
        return
    if spec in SPLITS:
        if not data_settings:
            raise ValueError(f"--reference {spec}: the checkpoint records no data settings; give a CSV file or "
                             "DATASET:SPLIT (e.g. perov_5:test)")
        if not str(data_settings.get("_class_path", "")).endswith("CrystalDataModule"):
            raise ValueError(f"--reference {spec}: the checkpoint's data ({data_settings.get('_class_path')}) is not "
                             "a crystal datamodule")
        return
    raise ValueError(f"--reference must be a CDVAE CSV file, DATASET:SPLIT with DATASET one of {sorted(BENCHMARKS)} "
                     f"and SPLIT one of {list(SPLITS)} (e.g. perov_5:test), or a split of the checkpoint's own data "
                     f"({', '.join(SPLITS)}); got {spec!r}")


def load_reference(spec: str, data_settings: dict[str, Any] | None = None) -> Reference:
    """The reference crystals of ``spec``: a CDVAE CSV file (read as the datamodule reads its splits), a benchmark
    split ``DATASET:SPLIT`` (``perov_5:test``, through :class:`~pointgeo.datamodules.crystals.CrystalDataModule`:
    its folder, or the verified official download) or a split name (``test``) of the checkpoint's own data
    (``data_settings``, its stored datamodule settings).

    Raises:
        ValueError: ``spec`` is none of these, or the checkpoint's data is not a crystal datamodule;
            ``DatasetFileError`` for a file that cannot be read (naming the row).
    """
    from pointgeo.datamodules.crystals import CrystalDataModule, Preprocessing, process_csv  # noqa: PLC0415
    from pointgeo.datamodules.settings import build_datamodule  # noqa: PLC0415

    check_reference(spec, data_settings)
    path = Path(spec)
    dataset = (data_settings or {}).get("dataset")
    if path.is_file():
        arrays = process_csv(path, [], Preprocessing(max_atoms=10**6))  # a reference of any size
        return Reference(spec, dataset if dataset in COV_CUTOFFS else None, _crystals_of(arrays))
    if spec not in SPLITS:
        name, _, split = spec.rpartition(":")
        dm = CrystalDataModule(dataset=name, max_atoms=10**6)
        return Reference(spec, name, _crystals_of(dm.split_arrays(split)))
    dm = build_datamodule(data_settings, None)
    return Reference(f"{spec} split of the checkpoint's data ({dm})", dm.benchmark.name,
                     _crystals_of(dm.split_arrays(spec)))


def _counts(evaluated: Sequence[EvaluatedCrystal]) -> dict[str, int]:
    return {"generated": len(evaluated), "constructed": sum(e.structure is not None for e in evaluated),
            "struct_valid": sum(e.struct_valid for e in evaluated), "comp_valid": sum(e.comp_valid for e in evaluated),
            "valid": sum(e.valid for e in evaluated)}


def compute_metrics(generated: list[Crystal], reference: Reference | None, *, dataset: str | None = None,
                    property_samples: int = PROPERTY_SAMPLES, seed: int = 0, progress: bool = True,
                    property_model: PropertyPredictor | None = None,
                    property_model_identity: dict[str, Any] | None = None,
                    ) -> tuple[dict[str, Any], list[EvaluatedCrystal]]:
    """The metrics of ``generated`` (module docstring) and the evaluated crystals.

    Args:
        generated: all generated crystals, in index order.
        reference: the reference set, or ``None`` (validity only).
        dataset: the benchmark whose COV cut-offs apply (default ``reference.dataset``).
        property_samples: valid generated crystals drawn (seeded by ``seed``) for the property statistics.
        progress: a progress bar over the crystals evaluated and fingerprinted.
        property_model: scores both sets for ``wdist_prop`` (``metrics["property"]``, with
            ``property_model_identity``, e.g. its spec and sha256).
    """
    dataset = dataset or (reference.dataset if reference is not None else None)
    if dataset is not None and dataset not in COV_CUTOFFS:
        raise ValueError(f"dataset must be one of {sorted(COV_CUTOFFS)} for the COV cut-offs; got {dataset!r}")
    refs = reference.crystals if reference is not None else []
    total = len(generated) + len(refs)
    notes = []
    with tqdm(total=total * (2 if reference is not None else 1), desc="metrics", unit="crystal",
              disable=not progress) as bar:
        step = lambda: bar.update(1)  # noqa: E731
        bar.set_postfix_str("validity")
        gen_eval, ref_eval = evaluate(generated, on_item=step), evaluate(refs, on_item=step)
        if reference is not None:
            bar.set_postfix_str("fingerprints")
            fingerprints([*gen_eval, *ref_eval], on_item=step)
    metrics: dict[str, Any] = {"format": METRICS_FORMAT, "dataset": dataset}
    cov = stats = None
    metrics["validity"] = validity(gen_eval)
    metrics["counts"] = _counts(gen_eval)
    if reference is None:
        notes.append("no reference set: COV and property statistics need --reference (e.g. the test split)")
        notes.append("validity without fingerprints: the benchmark also counts a crystal whose CrystalNN "
                     "fingerprint fails as invalid, which only a run with --reference checks")
    else:
        metrics["reference"] = {"source": reference.source, "crystals": len(refs), "validity": validity(ref_eval)}
        if dataset is None:
            notes.append("COV needs the dataset's cut-offs: the reference names no benchmark; pass --dataset")
        else:
            try:
                struct_cut, comp_cut = COV_CUTOFFS[dataset]
                cov = {**coverage(gen_eval, ref_eval, struct_cut, comp_cut), "struct_cutoff": struct_cut,
                       "comp_cutoff": comp_cut}
            except ValueError as exc:  # no generated crystal with a fingerprint: COV is undefined
                notes.append(f"COV not computed: {exc}")
        valid = sum(e.valid for e in gen_eval)
        n = min(property_samples, valid)
        if n == 0:
            notes.append("property statistics not computed: no valid generated crystal")
        else:
            if n < property_samples:
                notes.append(f"property statistics on all {n} valid generated crystals (the benchmark draws "
                             f"{property_samples})")
            stats = {**property_statistics(gen_eval, ref_eval, n_samples=n, seed=seed,
                                           property_model=property_model), "n_samples": n}
    metrics["coverage"] = cov
    prop = None if stats is None else stats.pop("wdist_prop", None)
    metrics["property_statistics"] = stats
    metrics["property"] = None
    if property_model is None:
        notes.append("property EMD (wdist_prop) needs a property model: pass --property-model CKPT (a checkpoint "
                     "with a property head, e.g. a CDVAE trained on the benchmark's property)")
    elif stats is not None:
        metrics["property"] = {"wdist_prop": prop, "n_samples": stats["n_samples"],
                               "model": property_model_identity}
    metrics["notes"] = notes
    return metrics, gen_eval


def _fraction(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, value, CDVAE paper)`` rows of the report's table."""
    paper = PAPER_CDVAE.get(metrics.get("dataset") or "", {})
    cov, stats = metrics.get("coverage") or {}, metrics.get("property_statistics") or {}
    rows = [("structure validity", metrics["validity"]["struct_valid"], "struct_valid", _fraction),
            ("composition validity (SMACT)", metrics["validity"]["comp_valid"], "comp_valid", _fraction),
            ("valid (both)", metrics["validity"]["valid"], "valid", _fraction),
            ("COV-R", cov.get("cov_recall"), "cov_recall", _fraction),
            ("COV-P", cov.get("cov_precision"), "cov_precision", _fraction),
            ("EMD density (g/cm³)", stats.get("wdist_density"), "wdist_density", _number),
            ("EMD property", (metrics.get("property") or {}).get("wdist_prop"), "wdist_prop", _number),
            ("EMD number of elements", stats.get("wdist_num_elems"), "wdist_num_elems", _number)]
    out = [(name, fmt(value), fmt(paper.get(key))) for name, value, key, fmt in rows]
    rates = (metrics.get("optimization") or {}).get("success_rates") or {}
    paper_sr = PAPER_SR.get(metrics.get("dataset") or "", {})
    return out + [(f"optimisation {name}", _number(rates.get(name)), _number(paper_sr.get(name)))
                  for name in ("SR5", "SR10", "SR15")]


def _pictures(crystals: list[Crystal], records: list[dict[str, Any]], folder: Path) -> Path | None:
    """A PNG of the first :data:`PICTURES` constructed crystals (valid ones first) with their unit cells."""
    from pointgeo.geometry import lattice_params_to_matrix  # noqa: PLC0415
    from pointgeo.viz.snapshot import render_crystal_snapshot  # noqa: PLC0415

    built = [r for r in records if r["constructed"]]
    chosen = sorted(built, key=lambda r: (not r["valid"], r["index"]))[:PICTURES]
    if not chosen:
        return None
    drawn = []
    for r in chosen:
        c = crystals[r["index"]]
        lattice = lattice_params_to_matrix(torch.from_numpy(c.lengths), torch.from_numpy(c.angles)).numpy()
        drawn.append((c.frac_coords, c.atom_types, lattice))
    captions = [f"#{r['index']} {_compact(r['formula'])}\n{'valid' if r['valid'] else 'invalid'}" for r in chosen]
    path = folder / "structures.png"
    render_crystal_snapshot(drawn, captions, path, size=(220 * len(chosen), 260))
    return path


def _compact(formula: str | None) -> str:
    """``"Sr1 Ti1 O3"`` as ``"SrTiO3"``."""
    return "?" if formula is None else re.sub(r"(?<=[A-Za-z])1(?![0-9])", "", formula.replace(" ", ""))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(metrics: dict[str, Any], records: list[dict[str, Any]], picture: Path | None) -> str:
    """The self-contained HTML report."""
    gen = metrics["generation"]
    counts = metrics["counts"]
    dataset = metrics.get("dataset")
    table = _table(["metric", "this model", f"CDVAE paper ({dataset})" if dataset else "CDVAE paper"],
                   metric_rows(metrics))
    invalid = [r for r in records if not r["valid"]]
    listing = _table(["index", "formula", "atoms", "CIF", "problems"],
                     [[str(r["index"]), r["formula"] or "–", str(r["natoms"]), r["cif"] or "none",
                       "; ".join(r["problems"])] for r in invalid[:50]])
    more = f"<p>… and {len(invalid) - 50} more (every one is in <code>manifest.json</code>).</p>" if len(
        invalid) > 50 else ""
    image = "" if picture is None else (
        f'<h2>Structures</h2><img alt="generated structures" '
        f'src="data:image/png;base64,{base64.b64encode(picture.read_bytes()).decode("ascii")}">')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in metrics["notes"])
    reference = metrics.get("reference")
    ref_text = "no reference set" if reference is None else (
        f"reference: {html.escape(reference['source'])} ({reference['crystals']} crystals)")
    details = html.escape(json.dumps({"checkpoint": metrics["checkpoint"], "generation": gen,
                                      "report_settings": metrics["report_settings"]}, indent=1, sort_keys=True))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pointgeo generation report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}img{max-width:100%}"
        "pre{background:#f4f4f4;padding:1em}</style></head><body>"
        f"<h1>Generated crystals</h1><p>{counts['generated']} crystals (batch size {gen['batch_size']}, seed "
        f"{gen['seed']}, {gen['num_noise_levels']} noise levels); {counts['constructed']} constructed, "
        f"{counts['valid']} valid; {ref_text}. Every figure is in <code>metrics.json</code>.</p>{table}"
        f"<ul>{notes}</ul>{image}<h2>Invalid crystals ({len(invalid)})</h2>{listing}{more}"
        f"<h2>Checkpoint and settings</h2><pre>{details}</pre></body></html>")


def report_settings(reference: str | None, dataset: str | None, html_report: bool, seed: int,
                    property_model: str | None = None, optimization: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides the report (a rerun with equal settings and both files present recomputes nothing):
    ``property_model`` the property checkpoint's sha256, ``optimization`` the optimisation's settings."""
    return {"reference": reference, "dataset": dataset, "property_samples": PROPERTY_SAMPLES, "seed": seed,
            "html": html_report, "property_model": property_model, "optimization": optimization}


def report_is_current(out: Path, settings: dict[str, Any]) -> bool:
    """Whether ``out`` already holds the report of these settings."""
    try:
        metrics = json.loads((out / REPORT_FILES[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return metrics.get("report_settings") == settings and (not settings["html"] or (out / REPORT_FILES[1]).is_file())


def write_report(out: str | Path, manifest: dict[str, Any], *, reference: str | None = None,
                 dataset: str | None = None, html_report: bool = True, progress: bool = True,
                 property_model: PropertyPredictor | None = None,
                 property_model_identity: dict[str, Any] | None = None,
                 optimization: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the metrics of the finished generation in ``out``, write ``metrics.json``, then ``report.html``
    (unless ``html_report`` is false); returns the metrics. A current report (:func:`report_is_current`) is
    returned as it is. ``property_model`` (identified by ``property_model_identity["sha256"]``) gives
    ``wdist_prop``; ``optimization`` (:func:`pointgeo.generation.optimize.run_optimization`'s result) goes into
    ``metrics["optimization"]`` without its per-run records (those stay in ``optimization.json``)."""
    out = Path(out)
    seed = manifest["settings"]["seed"]
    settings = report_settings(reference, dataset, html_report, seed,
                               (property_model_identity or {}).get("sha256") if property_model else None,
                               None if optimization is None else optimization["settings"])
    if report_is_current(out, settings):
        return json.loads((out / REPORT_FILES[0]).read_text(encoding="utf-8"))
    data = (manifest.get("checkpoint") or {}).get("data")
    ref = load_reference(reference, data) if reference is not None else None
    crystals = read_generated(out, manifest)
    metrics, _ = compute_metrics(crystals, ref, dataset=dataset, seed=seed, progress=progress,
                                 property_model=property_model, property_model_identity=property_model_identity)
    if optimization is not None:
        metrics["optimization"] = {k: v for k, v in optimization.items() if k not in ("runs", "format")}
    metrics.update({"checkpoint": manifest["checkpoint"], "generation": manifest["settings"],
                    "report_settings": settings})
    metrics = finite_or_none(metrics)
    write_json_atomic(out / REPORT_FILES[0], metrics)
    if html_report:
        records = [r for k in range(manifest["num_batches"]) for r in manifest["batches"][str(k)]["crystals"]]
        with tempfile.TemporaryDirectory() as tmp:
            text = render_html(metrics, records, _pictures(crystals, records, Path(tmp)))
        write_text_atomic(out / REPORT_FILES[1], text)
    return metrics

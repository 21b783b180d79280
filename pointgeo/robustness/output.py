"""The report folder: ``report.json`` first (every figure, seeds, versions, model and data identity), then PNG plots
(matplotlib, Agg), then one self-contained ``report.html`` (images embedded as base64, the comparison table on top).

Everything is written into a temporary folder beside the target and renamed into place at the end, so a crashed
run never leaves a report that looks complete. An existing non-empty folder is only replaced with ``overwrite``,
and only when it holds a previous report (``report.json``), never an unrelated folder.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROTOCOL_NAMES = {"none": "none", "z": "z", "so3": "SO(3)", "piecewise": "piecewise"}


def _modes(report: dict[str, Any]) -> list[str]:
    """The protocols the report holds, in :data:`PROTOCOL_NAMES` order (``piecewise`` only on data with parts)."""
    return [m for m in PROTOCOL_NAMES if m in report["models"][0]["protocols"]]


class ReportExistsError(FileExistsError):
    """The report folder exists and is not empty, and ``overwrite`` was not given (or it is not a report)."""


def check_target(out: Path, overwrite: bool) -> None:
    """Raise :class:`ReportExistsError` unless a report may be written to ``out``."""
    if out.exists() and not out.is_dir():
        raise ReportExistsError(f"{out} is a file, not a report folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ReportExistsError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        if not (out / "report.json").is_file():
            raise ReportExistsError(f"{out} is not empty and holds no report.json; --overwrite only replaces a "
                                    f"previous report, not this folder")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write the PNG plots into ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["metric"].replace("_", " ")
    names = [r["model"]["spec"] for r in report["models"]]
    paths = []

    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 3.6))
    modes = _modes(report)
    width = 0.8 / len(modes)
    for p, mode in enumerate(modes):
        values = [100 * r["protocols"][mode][report["metric"]] for r in report["models"]]
        ax.bar([i + p * width for i in range(len(names))], values, width, label=f"test {PROTOCOL_NAMES[mode]}")
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(names))], names, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(modes), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(folder / "protocols.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), sharey=True)
    for ax, axis in zip(axes, "xyz"):
        for result in report["models"]:
            ax.plot(result["sweep"]["angles_degrees"], [100 * a for a in result["sweep"][axis]], marker="o",
                    markersize=3, label=result["model"]["spec"])
        ax.set_title(f"rotation about {axis}" + (" (up axis)" if axis == report["data"]["up_axis"] else ""))
        ax.set_xlabel("angle (degrees)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper center", ncol=len(names), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    paths.append(folder / "angle_sweep.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    classes = report["data"]["class_names"]
    key = report["models"][0]["per_class_metric"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(classes) * len(names) + 2), 3.8))
    width = 0.8 / len(names)
    for m, result in enumerate(report["models"]):
        per_class = result["protocols"]["so3"][key]
        values = [math.nan if per_class[c] is None else 100 * per_class[c] for c in classes]
        ax.bar([i + m * width for i in range(len(classes))], values, width, label=result["model"]["spec"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"{metric} under SO(3) (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names), frameon=False)
    fig.tight_layout()
    paths.append(folder / "per_class_so3.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A table of the (escaped here) ``header`` and the rows' cells (HTML already)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def embedded_image(path: Path) -> str:
    """An ``<img>`` holding the PNG at ``path`` (base64), so the page needs no other file."""
    return (f'<img alt="{html.escape(path.stem)}" '
            f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}">')


def report_details(report: dict[str, Any]) -> str:
    """The report's settings, data and versions as escaped, indented JSON (for a ``<pre>``)."""
    return html.escape(json.dumps({"settings": report["settings"], "data": report["data"],
                                   "versions": report["versions"]}, indent=2))


def html_page(title: str, body: str) -> str:
    """A self-contained report page: ``title`` in the head, the shared style, ``body`` (HTML)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
            "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}img{max-width:100%}"
            f"pre{{background:#f4f4f4;padding:1em}}</style></head><body>{body}</body></html>")


def _comparison(report: dict[str, Any]) -> str:
    columns = list(dict.fromkeys(c for row in report["table"] for c in row))

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and ("/" in key or key.startswith("flip") or "accuracy" in key):
            return _percent(value)
        return f"{value:.2e}" if isinstance(value, float) else html.escape(str(value))

    return html_table(columns, [[cell(c, row.get(c)) for c in columns] for row in report["table"]])


def _invariance(report: dict[str, Any]) -> str:
    rows = []
    for result in report["models"]:
        for mode in _modes(report)[1:]:
            p = result["protocols"][mode]
            rows.append([html.escape(result["model"]["spec"]), PROTOCOL_NAMES[mode], f"{p['max_logit_change']:.2e}",
                         f"{p['mean_logit_change']:.2e}", f"{p['max_relative_logit_change']:.2e}",
                         _percent(p["flip_rate"]), "yes" if p["invariant_within_tolerance"] else "no",
                         "—" if p["mean_orientation_error"] is None else f"{p['mean_orientation_error']:.2e}"])
    return html_table(["model", "test rotation", "max |Δ logit|", "mean |Δ logit|", "max |Δ| / max |logit|",
                   "prediction flip rate", f"invariant within {report['settings']['dtype']} tolerance",
                   "mean orientation error ‖O(Rx) − O(x)Rᵀ‖"], rows)


def _per_class(report: dict[str, Any]) -> str:
    key = report["models"][0]["per_class_metric"]
    pairs = [(r, m) for r in report["models"] for m in _modes(report)]
    header = ["class"] + [f"{r['model']['spec']} / {PROTOCOL_NAMES[m]}" for r, m in pairs]
    rows = [[html.escape(c)] + [_percent(r["protocols"][m][key][c]) for r, m in pairs]
            for c in report["data"]["class_names"]]
    return html_table(header, rows)


def _piecewise(report: dict[str, Any]) -> str:
    """What the piecewise protocol did, and the measured figures of networks predicting their own partition."""
    if "piecewise" not in _modes(report):
        return ""
    text = (f"<h2>Piecewise motion</h2><p>Protocol <code>piecewise</code>: every part of a test shape (its "
            f"partition: <code>instance</code>, else <code>seg</code>) moved by its own Haar rotation about its "
            f"centroid and a translation of {report['settings']['piecewise_translation_rms_radii']} RMS radii "
            f"(standard deviation), {report['settings']['n_rotations']} seeded motions per shape. A globally "
            f"invariant network has no guarantee there; a piecewise-equivariant one is measured below.</p>")
    measured = [(r["model"]["spec"], r["measured_piecewise"]) for r in report["models"] if r.get("measured_piecewise")]
    if not measured:
        return text
    keys = list(dict.fromkeys(k for _, m in measured for k in m["mean_over_batches"]))
    rows = [[html.escape(spec)] + [f"{m['mean_over_batches'][k]:.3e}" if k in m["mean_over_batches"] else "–"
                                   for k in keys] + [str(m["shapes"])] for spec, m in measured]
    return text + ("<p>Measured with the network's own predicted partition (means over the test batches; maxima in "
                   "<code>report.json</code>):</p>" + html_table(["model", *keys, "shapes"], rows))


def _identity(report: dict[str, Any]) -> str:
    rows = [[html.escape(str(r["model"][k])) for k in ("spec", "network", "task", "train_rotation", "sha256",
                                                         "checkpoint")] for r in report["models"]]
    return html_table(["model", "network", "task", "train rotation", "sha256", "checkpoint"], rows)


def _html(report: dict[str, Any], images: list[Path]) -> str:
    metric = html.escape(report["metric"].replace("_", " "))
    figures = "".join(f'<h2>{html.escape(p.stem.replace("_", " "))}</h2>{embedded_image(p)}' for p in images)
    return html_page("pointgeo robustness report", (
        f"<h1>Rotation robustness ({metric})</h1>{_comparison(report)}"
        f"<p>Columns <code>train/test</code>: {metric} on {report['data']['evaluated_shapes']} test shapes of "
        f"{html.escape(report['data']['class_path'])} under each test rotation protocol "
        f"({report['settings']['n_rotations']} seeded rotations per shape, seed {report['settings']['seed']}); "
        "max logit change and flip rate: between each SO(3)-rotated copy and the unrotated shape. Every figure is in "
        "<code>report.json</code>.</p>"
        f"<h2>Measured invariance</h2>{_invariance(report)}{_piecewise(report)}{figures}"
        f"<h2>Per class</h2>{_per_class(report)}<h2>Models</h2>{_identity(report)}"
        f"<h2>Settings, data and versions</h2><pre>{report_details(report)}</pre>"
        f"<p>pointgeo {html.escape(report['versions']['pointgeo'])}</p>"
    ))


def write_report(report: dict[str, Any], out: Path, *, overwrite: bool,
                 plots: Callable[[dict[str, Any], Path], list[Path]] | None = None,
                 render: Callable[[dict[str, Any], list[Path]], str] | None = None) -> None:
    """Write ``report.json``, the plots and ``report.html`` into a temporary folder beside ``out``, then move it
    into place (replacing a previous report only with ``overwrite``). ``plots(report, folder) -> paths`` and
    ``render(report, paths) -> html`` default to the rotated-test report's (other task kinds bring their own)."""
    plots, render = plots or _plots, render or _html
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        tmp.chmod(0o755)  # mkdtemp's private mode would stick to the finished report
        (tmp / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
        images = plots(report, tmp)
        (tmp / "report.html").write_text(render(report, images), encoding="utf-8")
        check_target(out, overwrite)
        if out.is_dir() and any(out.iterdir()):  # a previous report, replaced only with overwrite
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)  # an empty folder is replaced by the rename itself
        except OSError:
            if old is not None:
                os.replace(old / out.name, out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

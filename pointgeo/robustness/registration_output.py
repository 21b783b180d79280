"""The plot and the HTML page of a registration robustness report (:mod:`pointgeo.robustness.registration`)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from pointgeo.robustness.output import embedded_image, html_page, html_table, report_details

PANELS = (("registration_recall", "RR (%)", 100.0), ("inlier_ratio", "IR (%)", 100.0),
          ("rre_degrees", "RRE on accepted pairs (deg)", 1.0))


def registration_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """``registration_vs_angle.png``: RR, IR and RRE of every model against the angle bin's centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = report["settings"]["bin_edges_degrees"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.8))
    for ax, (key, label, scale) in zip(axes, PANELS):
        for result in report["models"]:
            values = [math.nan if f[key] is None else scale * f[key] for f in result["bins"]]
            ax.plot(centres, values, marker="o", markersize=4, label=result["model"]["spec"])
        ax.set_xlabel("rotation angle applied to one cloud (degrees)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 180)
        if scale == 100.0:
            ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = folder / "registration_vs_angle.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f} %" if key.startswith(("RR", "IR")) else f"{value:.3g}"
    return html.escape(str(value))


def registration_html(report: dict[str, Any], images: list[Path]) -> str:
    """A self-contained page: the comparison table, the per-bin figures, the plot, settings and versions."""
    columns = list(report["table"][0])
    table = html_table(columns, [[_cell(c, r.get(c)) for c in columns] for r in report["table"]])
    edges = report["settings"]["bin_edges_degrees"]
    per_bin = "".join(
        f"<h3>{html.escape(result['model']['spec'])}</h3>" + html_table(
            ["angle (deg)", "pairs", "RR", "IR", "RRE (deg)", "RTE", "failures", "s / pair"],
            [[f"{a:g}–{b:g}", str(f["pairs"]), _cell("RR", f["registration_recall"]), _cell("IR", f["inlier_ratio"]),
              _cell("", f["rre_degrees"]), _cell("", f["rte"]), str(f["failures"]), f"{f['seconds_per_pair']:.3g}"]
             for a, b, f in zip(edges, edges[1:], result["bins"])])
        for result in report["models"])
    figures = "".join(embedded_image(p) for p in images)
    return html_page("pointgeo registration robustness", (
        f"<h1>Registration robustness</h1>{table}"
        f"<p>{report['data']['evaluated_pairs']} test pairs of {html.escape(report['data']['class_path'])}, "
        f"each with {report['settings']['n_rotations']} rotation(s) per angle bin applied to the "
        f"{html.escape(report['settings']['rotated_cloud'])} (axis uniform on the sphere, angle uniform in the "
        "bin, seeded per pair). RR: mean distance below 0.2 m (failed registrations never count); IR: "
        "correspondences within 0.1 m under the truth; RRE, RTE on accepted pairs; all averaged per scene, then "
        "over scenes. Every figure is in <code>report.json</code>.</p>"
        f"<h2>Per angle bin</h2>{per_bin}<h2>Against the angle</h2>{figures}"
        f"<h2>Settings, data and versions</h2><pre>{report_details(report)}</pre>"))

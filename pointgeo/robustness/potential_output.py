"""The plot and the HTML page of a potential robustness report (:mod:`pointgeo.robustness.potentials`)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any


def potential_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """``nve_energy.png``: the total energy (relative to its start, meV/atom) along each model's NVE runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for result in report["models"]:
        for run in result["nve"]:
            e = run["total_energy_ev"]
            ax.plot(run["time_fs"], [1000 * (x - e[0]) / run["num_atoms"] for x in e],
                    label=f"{result['model']['spec']} (row {run['row']})")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("E_tot − E_tot(0) (meV/atom)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "nve_energy.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def potential_html(report: dict[str, Any], images: list[Path]) -> str:
    """A self-contained page: the comparison table, the NVE plot, settings and versions."""
    columns = list(report["table"][0])

    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in report["table"])
    figures = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                      f'{base64.b64encode(p.read_bytes()).decode("ascii")}">' for p in images)
    details = html.escape(json.dumps({"settings": report["settings"], "data": report["data"],
                                      "versions": report["versions"]}, indent=2))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>pointgeo potential robustness</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
            "padding:4px 8px;text-align:right}pre{background:#f4f4f4;padding:1em}</style></head><body>"
            f"<h1>Potential robustness</h1><table><tr>{head}</tr>{rows}</table>"
            "<p>MAEs in meV and meV/Å on the test molecules, unrotated and under seeded SO(3) rotations; energy "
            "invariance and force equivariance errors are norm-wise relative (max |ΔE| / max |E|, max |ΔF| / max "
            "|F|); NVE drift in eV/atom/ps. Every figure is in <code>report.json</code>.</p>"
            f"<h2>NVE total energy</h2>{figures}<h2>Settings, data and versions</h2><pre>{details}</pre></body></html>")

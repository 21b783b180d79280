"""The plot and the HTML page of a potential robustness report (:mod:`pointgeo.robustness.potentials`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from pointgeo.robustness.output import embedded_image, html_page, html_table, report_details


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

    figures = "".join(embedded_image(p) for p in images)
    return html_page("pointgeo potential robustness", (
        "<h1>Potential robustness</h1>"
        + html_table(columns, [[cell(r.get(c)) for c in columns] for r in report["table"]])
        + "<p>MAEs in meV and meV/Å on the test molecules, unrotated and under seeded SO(3) rotations; energy "
        "invariance and force equivariance errors are norm-wise relative (max |ΔE| / max |E|, max |ΔF| / max "
        "|F|); NVE drift in eV/atom/ps. Every figure is in <code>report.json</code>.</p>"
        f"<h2>NVE total energy</h2>{figures}<h2>Settings, data and versions</h2><pre>{report_details(report)}</pre>"))

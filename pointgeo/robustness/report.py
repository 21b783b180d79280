"""The robustness report: ``report.json`` first (every figure, seeds, versions, model and data identity), then PNG
plots (matplotlib, Agg), then one self-contained ``report.html`` with the images embedded and the comparison table
on top. Everything is written into a temporary folder beside the target and renamed at the end, so a crashed run
never leaves a report that looks complete; an existing non-empty folder is never overwritten silently.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pointgeo import __version__
from pointgeo.robustness.protocol import PROTOCOLS, ClassificationEvaluator, ProtocolSettings, evaluate

PROTOCOL_LABEL = {"none": "none", "z": "z", "so3": "SO3"}


class ReportExistsError(FileExistsError):
    """The report folder exists and is not empty, and ``overwrite`` was not given."""


def load_model(spec: str, dtype: torch.dtype, device: str) -> tuple[Any, dict[str, Any]]:
    """A task from a registry name, checkpoint path or file URL, with its identity and stored data settings."""
    from pointgeo.download import sha256sum
    from pointgeo.hub import CHECKPOINTS, fetch, from_pretrained, load_checkpoint

    path = fetch(spec, progress=False)
    ckpt = load_checkpoint(path)
    task = from_pretrained(str(path)).to(device=device, dtype=dtype).eval()
    data = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items()}
    identity = {
        "spec": spec,
        "registry_name": spec if spec in CHECKPOINTS else None,
        "checkpoint": str(path),
        "sha256": sha256sum(path),
        "network": task.hparams.network,
        "num_classes": task.hparams.num_classes,
        "train_rotation": data.get("train_rotation", "unknown"),
        "task": ckpt.get("pointgeo", {}).get("task", "classification"),
    }
    return task, {"identity": identity, "data": data}


def build_datamodule(data: dict[str, Any], override: dict[str, Any] | None) -> Any:
    """The datamodule of ``override`` (a config's ``data`` section) or of the checkpoint's stored settings."""
    import importlib

    spec = override if override is not None else {
        "class_path": data.get("_class_path"), "init_args": {k: v for k, v in data.items() if not k.startswith("_")}}
    if not spec.get("class_path"):
        raise ValueError("the checkpoint records no datamodule; pass a data config with --data")
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**spec.get("init_args", {}))


def read_data_config(config: str) -> dict[str, Any]:
    """The ``data`` section (``class_path`` + ``init_args``) of a YAML config, given by path or shipped name."""
    import yaml

    from pointgeo.cli import shipped_config

    path = Path(config) if Path(config).is_file() else shipped_config(config)
    if path is None:
        raise FileNotFoundError(f"no config file or shipped config named {config!r}")
    section = (yaml.safe_load(path.read_text()) or {}).get("data")
    if not isinstance(section, dict) or "class_path" not in section:
        raise ValueError(f"{path} has no data section with a class_path")
    return section


def run_robustness(
    models: list[str],
    out: str | Path,
    *,
    data_config: str | None = None,
    settings: ProtocolSettings | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    double: bool = False,
    overwrite: bool = False,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``models`` side by side under the rotation protocols and write the report folder ``out``."""
    settings = settings or ProtocolSettings()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReportExistsError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    dtype = torch.float64 if double else torch.float32
    loaded = [load_model(spec, dtype, device) for spec in models]
    override = read_data_config(data_config) if data_config else None
    dm = build_datamodule(loaded[0][1]["data"], override)
    for task, info in loaded:
        if task.hparams.num_classes != dm.num_classes:
            raise ValueError(f"{info['identity']['spec']} predicts {task.hparams.num_classes} classes but the data has "
                             f"{dm.num_classes}")
    dm.batch_size = batch_size
    dm.set_test_rotation("none")
    dm.prepare_data()
    dm.setup("test")

    def batches() -> Any:
        seen = 0
        for batch in dm.test_dataloader():
            if max_samples is not None and seen >= max_samples:
                return
            batch = {k: (v[: max_samples - seen] if max_samples is not None else v) for k, v in batch.items()}
            seen += batch["label"].shape[0]
            yield {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                   for k, v in batch.items()}

    results = []
    for task, info in loaded:
        figures = evaluate(ClassificationEvaluator(task), batches, dm.num_classes, dm.up_axis, settings,
                           description=info["identity"]["spec"])
        results.append({"model": info["identity"], **figures})
    report = {
        "pointgeo_version": __version__,
        "versions": {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"n_rotations": settings.n_rotations, "sweep_step_degrees": settings.sweep_step,
                     "seed": settings.seed, "dtype": str(dtype), "device": device, "max_samples": max_samples},
        "data": {"class_path": f"{type(dm).__module__}.{type(dm).__name__}", "up_axis": dm.up_axis,
                 "class_names": dm.class_names, "settings": {k: v for k, v in dict(dm.hparams).items()
                                                             if not k.startswith("_")}},
        "table": [table_row(r) for r in results],
        "models": results,
    }
    write_report(report, out, overwrite=overwrite)
    return report


def table_row(result: dict[str, Any]) -> dict[str, Any]:
    """One line of the comparison table: accuracy per protocol labelled ``train/test``, and invariance figures."""
    train = PROTOCOL_LABEL.get(result["model"]["train_rotation"], result["model"]["train_rotation"])
    row = {"model": result["model"]["spec"], "network": result["model"]["network"], "train_rotation": train}
    for mode in PROTOCOLS:
        row[f"{train}/{PROTOCOL_LABEL[mode]}"] = result["protocols"][mode]["accuracy"]
    row["max_logit_change_so3"] = result["protocols"]["so3"]["max_logit_change"]
    row["flip_rate_so3"] = result["protocols"]["so3"]["flip_rate"]
    return row


def _plots(report: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, axis in zip(axes, "xyz"):
        for result in report["models"]:
            ax.plot(result["sweep"]["angles_degrees"], [100 * a for a in result["sweep"][axis]], marker="o",
                    markersize=3, label=result["model"]["spec"])
        ax.set_title(f"rotation about {axis}")
        ax.set_xlabel("angle (degrees)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "angle_sweep.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    names = report["data"]["class_names"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) * len(report["models"])), 3.6))
    width = 0.8 / len(report["models"])
    for m, result in enumerate(report["models"]):
        ax.bar([i + m * width for i in range(len(names))],
               [100 * a for a in result["protocols"]["so3"]["per_class_accuracy"]], width,
               label=result["model"]["spec"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy under SO(3) (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "per_class_so3.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _html(report: dict[str, Any], images: list[Path]) -> str:
    columns = list(report["table"][0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def cell(key: str, value: Any) -> str:
        if isinstance(value, float):
            text = f"{100 * value:.2f} %" if "/" in key or key.startswith("flip") else f"{value:.2e}"
        else:
            text = html.escape(str(value))
        return f"<td>{text}</td>"

    rows = "".join("<tr>" + "".join(cell(c, row[c]) for c in columns) + "</tr>" for row in report["table"])
    figures = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img alt="{p.stem}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">' for p in images
    )
    settings = html.escape(json.dumps(report["settings"]))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pointgeo robustness report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
        "padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>Rotation robustness</h1><table><tr>{head}</tr>{rows}</table>"
        f"<p>Columns <code>train/test</code>: accuracy with the test rotation protocol; max logit change and flip "
        f"rate: between each SO(3)-rotated copy and the unrotated shape. Settings: <code>{settings}</code>; "
        f"pointgeo {html.escape(report['pointgeo_version'])}. All figures: <code>report.json</code>.</p>"
        f"{figures}</body></html>"
    )


def write_report(report: dict[str, Any], out: Path, *, overwrite: bool) -> None:
    """Write ``report.json``, the plots and ``report.html`` into a temp folder, then move it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        images = _plots(report, tmp)
        (tmp / "report.html").write_text(_html(report, images))
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise ReportExistsError(f"{out} appeared while the report was computed; nothing was overwritten")
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""Models and data of a robustness run: checkpoints rebuilt exactly (every weight must fit), their identity, and the
data settings of the test datamodule (the first checkpoint's own, or a config's ``data`` section; the datamodule is
built by :func:`pointgeo.datamodules.settings.build_datamodule`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pointgeo.datamodules.settings import public_settings


@dataclass
class LoadedModel:
    """A model ready to evaluate: its task (eval mode, in the run's dtype and device), kind, identity and the data
    settings stored in its checkpoint."""

    spec: str
    task: Any
    kind: str
    identity: dict[str, Any]
    data: dict[str, Any]
    data_state: dict[str, Any] | None = None
    """The datamodule's saved state (molecules: the fitted element references), if the checkpoint has one."""


def load_model(spec: str, dtype: torch.dtype, device: str) -> LoadedModel:
    """Rebuild the task of ``spec`` (a pretrained name, a checkpoint path or a ``file://`` URL) with
    :func:`pointgeo.hub.rebuild_task`, every weight fitting exactly.

    Raises ``KeyError`` for an unknown name, ``FileNotFoundError`` for a missing file and ``ValueError``
    (``DatasetFileError``) for a corrupt checkpoint, one of an unsupported task, or one whose weights do not fit its
    own network.
    """
    from pointgeo.download import sha256sum
    from pointgeo.hub import CHECKPOINTS, fetch, load_checkpoint, rebuild_task

    path = fetch(spec, progress=False)
    ckpt = load_checkpoint(path)
    meta = ckpt.get("pointgeo", {})
    kind = meta.get("task", "classification")
    hparams = public_settings(ckpt["hyper_parameters"])
    task = rebuild_task(ckpt, spec)
    task = task.to(device=device, dtype=dtype).eval()
    data = dict(ckpt.get("datamodule_hyper_parameters", {}))
    identity = {
        "spec": spec,
        "registry_name": spec if spec in CHECKPOINTS else None,
        "checkpoint": str(Path(path).resolve()),
        "sha256": sha256sum(path),
        "task": kind,
        "network": hparams.get("network"),
        "network_kwargs": hparams.get("network_kwargs"),
        "num_classes": hparams.get("num_classes"),
        "use_normals": bool(hparams.get("use_normals", False)),
        "train_rotation": data.get("train_rotation", "unknown"),
        "trained_on": {"class_path": data.get("_class_path"), "settings": public_settings(data)},
        "written_by_pointgeo": meta.get("version"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
    }
    states = [v for k, v in ckpt.items() if k.endswith("DataModule") and isinstance(v, dict)]  # Lightning's key
    return LoadedModel(spec, task, kind, identity, data, states[0] if states else None)


def read_data_config(config: str) -> dict[str, Any]:
    """The ``data`` section (``class_path`` + ``init_args``) of a YAML config, given by path or shipped name."""
    import yaml

    from pointgeo.configs import shipped_config

    path = Path(config) if Path(config).is_file() else shipped_config(config)
    if path is None:
        raise FileNotFoundError(f"no config file or shipped config named {config!r}")
    try:
        section = (yaml.safe_load(path.read_text()) or {}).get("data")
    except (yaml.YAMLError, AttributeError) as exc:
        raise ValueError(f"{path} is not a YAML config with a data section: {exc}") from exc
    if not isinstance(section, dict) or "class_path" not in section:
        raise ValueError(f"{path} has no data section with a class_path")
    return section


def check_same_data(models: list[LoadedModel]) -> None:
    """Without ``--data`` every model is tested on the first one's data: refuse models trained on another dataset."""
    first = models[0]
    for model in models[1:]:
        if model.data.get("_class_path") != first.data.get("_class_path"):
            raise ValueError(
                f"{model.spec} was trained on {model.data.get('_class_path')} but {first.spec} on "
                f"{first.data.get('_class_path')}; pass --data to test every model on the same data"
            )

"""APEN under piecewise motion, before and after training: test mIoU (both conventions) and the measured piecewise
error with the predicted and with the given partition.

    python benchmarks/apen_piecewise.py --config configs/articulated/partseg-apen.yaml --ckpt runs/.../last.ckpt

The untrained network is the config's (``seed_everything`` seed, as ``pointgeo train`` builds it); the trained one
the checkpoint's. Both are measured on the config's test split, whose samples are articulated by construction (every
part under its own rigid motion; plus the split's test rotation), and by
:func:`pointgeo.testing.measure_apen_piecewise` (float64, ``--trials`` further piecewise motions per sample) on its
first ``--samples`` samples. Prints one JSON object.
"""

from __future__ import annotations

import common  # noqa: F401  (first: pointgeo's CPU memory settings before torch)

import argparse
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from pointgeo.hub import from_pretrained
from pointgeo.lightning_cli import PointGeoCLI
from pointgeo.metrics.part_iou import PartSegmentationIoU, restrict_logits_to_category
from pointgeo.metrics.partition import partition_accuracy
from pointgeo.testing import measure_apen_piecewise


def evaluate(task: Any, data: Any, samples: int, trials: int) -> dict[str, Any]:
    """Test-split mIoU under both conventions and partition accuracy, then the piecewise measurement (float64)."""
    task.eval()
    metrics = {c: PartSegmentationIoU(data.category_parts, task.hparams.num_parts, convention=c)
               for c in ("shapenet", "apen")}
    accuracy = []
    with torch.no_grad():
        for batch in data.test_dataloader():
            out = task.net.segment(batch["pos"], batch.get("normal"), batch["category"])
            pred = restrict_logits_to_category(out.logits, batch["category"], task.membership).argmax(-1)
            for metric in metrics.values():
                metric.update(pred, batch["seg"], batch["category"])
            accuracy.append(partition_accuracy(out.partition, batch["seg"]))
    result: dict[str, Any] = {k: float(v) for m in metrics.values() for k, v in m.compute().items()}
    result["test_partition_accuracy"] = float(torch.cat(accuracy).mean())
    dataset = data.dataset("test")
    items = [dataset[i] for i in range(min(samples, len(dataset)))]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("pos", "normal", "seg", "category")
             if k in items[0]}
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    net = task.net.double()
    result["piecewise"] = measure_apen_piecewise(net, batch, seed=0, trials=trials)
    task.net.float()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    cli = PointGeoCLI(["--config", str(args.config)], run=False)
    data = cli.datamodule
    data.setup("test")
    untrained = cli.model
    untrained._set_category_parts(data.category_parts)
    pl.seed_everything(0)
    report = {"config": str(args.config), "checkpoint": str(args.ckpt),
              "untrained": evaluate(untrained, data, args.samples, args.trials),
              "trained": evaluate(from_pretrained(str(args.ckpt)), data, args.samples, args.trials)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

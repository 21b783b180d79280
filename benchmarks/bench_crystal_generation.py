"""Throughput of the CPU-sized CDVAE: training steps (crystals/s) and annealed Langevin generation (crystals per
second per Langevin step), batched, at several batch sizes.

The model and data come from a config's ``model`` and ``data`` sections (default: the CPU-sized perov_5 config on
the shared 1024-row subset), built as ``pointgeo train`` builds them. Training: forward + backward + Adam on the
first ``B`` training crystals (median of ``--repeats`` steps after one warm-up). Generation: one ``sample(B)`` call
over every noise level; the time of each level is taken from the ``on_level`` callback, and the throughput is
``B × steps / seconds`` with ``steps`` the Langevin steps of one generation (levels × steps per level).

    python benchmarks/bench_crystal_generation.py [--config crystals/perov_5-cdvae-cpu] [--root DIR] \\
        [--train-batch-sizes 16 64 256] [--sample-batch-sizes 1 16 64 256] [--threads 2]
"""

from __future__ import annotations

import common  # noqa: F401  (first: pointgeo's CPU settings before torch)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

DEFAULT_CONFIG = "crystals/perov_5-cdvae-cpu"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdvae" / "perov_5_dev"


def build(config: str, root: Path) -> tuple[Any, Any]:
    """The task and the datamodule of ``config`` (fit stage set up: scalers fitted on the training split)."""
    import yaml

    from pointgeo.configs import shipped_config
    from pointgeo.datamodules.settings import build_datamodule
    from pointgeo.robustness.loading import read_data_config

    path = Path(config) if Path(config).is_file() else shipped_config(config)
    sections = yaml.safe_load(Path(path).read_text())
    data = read_data_config(str(path))
    data = {**data, "init_args": {**data.get("init_args", {}), "root": str(root), "download": False}}
    dm = build_datamodule({}, data)
    dm.setup("fit")
    model = sections["model"]
    module, _, name = model["class_path"].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    task = cls(**model.get("init_args", {}))
    task.net.set_scalers(dm.lattice_scaler.mean, dm.lattice_scaler.std, dm.property_scaler.mean,
                         dm.property_scaler.std)  # what fitting through Lightning copies from the datamodule
    return task, dm


def time_training(task: Any, dm: Any, batch_sizes: list[int], repeats: int) -> None:
    from torch_geometric.data import Batch

    dataset = dm.dataset("train")
    task.train()
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    for size in batch_sizes:
        batch = Batch.from_data_list([dataset[i] for i in range(min(size, len(dataset)))])
        times = []
        for step in range(repeats + 1):
            start = time.perf_counter()
            optimizer.zero_grad()
            out = task.training_step(batch, step)
            loss = out["loss"] if isinstance(out, dict) else out
            loss.backward()
            optimizer.step()
            if step:
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        print(f"training step, B={batch.num_graphs}: {seconds * 1e3:8.1f} ms/step  "
              f"{batch.num_graphs / seconds:8.1f} crystals/s", flush=True)


def time_generation(task: Any, batch_sizes: list[int], steps_per_level: int | None) -> None:
    task.eval()
    for size in batch_sizes:
        stamps: list[float] = []
        start = time.perf_counter()
        with torch.no_grad():
            task.sample(size, generator=torch.Generator().manual_seed(0), on_level=lambda i, n: stamps.append(
                time.perf_counter()))
        seconds = time.perf_counter() - start
        levels = len(stamps)
        per_level = statistics.median(b - a for a, b in zip([start, *stamps[:-1]], stamps))
        line = (f"generation, B={size}: {seconds:7.2f} s for {levels} levels ({per_level * 1e3:.1f} ms/level), "
                f"{size / seconds:8.2f} crystals/s")
        if steps_per_level:
            steps = levels * steps_per_level
            line += f", {size * steps / seconds:9.1f} crystals/s per Langevin step ({steps} steps)"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder with train/val/test.csv")
    parser.add_argument("--train-batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--sample-batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    task, dm = build(args.config, args.root)
    params = sum(p.numel() for p in task.parameters())
    steps_per_level = task.hparams.get("langevin_steps_per_level")
    print(f"CDVAE ({args.config}): {params / 1e6:.2f} M parameters, {task.num_noise_levels} noise levels, "
          f"{steps_per_level or '?'} Langevin steps per level; {common.device_name('cpu')}")
    time_training(task, dm, args.train_batch_sizes, args.repeats)
    time_generation(task, args.sample_batch_sizes, steps_per_level)


if __name__ == "__main__":
    main()

"""RISurConv training speed and memory against the released code's figures on the same 2-core CPU machines.

Reference (measured with the original code and its pure-torch fallbacks, forward + backward + Adam step):
classification 2.4 samples/s with 5.3 GB peak at B = 32, N = 1024; part segmentation 0.39 samples/s with 12 GB at
B = 16, N = 2048. This script runs the same step on pointgeo's networks and prints samples/s, peak memory (resident
memory above the level before the warm-up step, sampled every millisecond; CUDA's peak allocation on GPU), the
parameter count, and the ratios (throughput: ours / reference; memory: reference / ours; both should be >= 2).

With ``--released PATH`` (a checkout of https://github.com/cszyzhang/RISurConv) the released networks are also run
here, in the same process and on the same random clouds, after pointgeo's: their CUDA ``pointops`` are replaced by the
checkout's own pure-torch functions (``farthest_point_sample``, ``knn_point``, ``query_ball_point``), as the
reference figures were measured, and the ratios are printed against that run too.

    python benchmarks/bench_risurconv.py [--quick] [--only risurconv_cls] [--device cuda] [--batch B] [--points N]
        [--released PATH]
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse
import importlib
import sys
import types
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from common import device_name, measure, print_against_reference, print_measurement, print_ratios

from pointgeo.registry import create_model

REFERENCE = {
    "risurconv_cls": {"samples_per_s": 2.4, "peak_mib": 5.3 * 1024, "batch": 32, "points": 1024},
    "risurconv_seg": {"samples_per_s": 0.39, "peak_mib": 12 * 1024, "batch": 16, "points": 2048},
}


def training_step(name: str, batch: int, points: int, device: str) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The network and one forward + backward + Adam step on random clouds with unit normals."""
    torch.manual_seed(0)
    if name == "risurconv_seg":
        net = create_model(name, num_parts=50, num_categories=16, use_normals=True)
    else:
        net = create_model(name, num_classes=40, use_normals=True)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    pos = torch.rand(batch, points, 3, device=device) * 2 - 1
    normal = F.normalize(torch.randn_like(pos), dim=-1)
    category = torch.randint(0, 16, (batch,), device=device)
    label = torch.randint(0, 50, (batch, points), device=device) if name == "risurconv_seg" else category

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = net(pos, normal, category) if name == "risurconv_seg" else net(pos, normal)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), label.reshape(-1)).backward()
        opt.step()

    return net, step


def released_training_step(checkout: Path, name: str, batch: int, points: int,
                           device: str) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The released network of a checkout and its own training step (log-softmax outputs, NLL loss), on the same
    random clouds as :func:`training_step`; ``pointops`` (CUDA only) is served by the checkout's torch functions."""
    sys.path[:0] = [path for path in (str(checkout), str(checkout / "models")) if path not in sys.path]
    ops = types.ModuleType("pointops.functions.pointops")
    package = types.ModuleType("pointops")
    package.functions = types.ModuleType("pointops.functions")
    package.functions.pointops = ops
    sys.modules.update({"pointops": package, "pointops.functions": package.functions,
                        "pointops.functions.pointops": ops})
    utils = importlib.import_module("risurconv_utils")
    ops.furthestsampling = utils.farthest_point_sample
    ops.knnquery = lambda k, ref, query: utils.knn_point(k, ref, query)
    ops.ballquery = lambda radius, k, xyz, new_xyz: utils.query_ball_point(radius, k, xyz, new_xyz)
    torch.manual_seed(0)
    seg = name == "risurconv_seg"
    if seg:
        net = importlib.import_module("risurconv_part_seg").get_model(50, normal_channel=True)
    else:
        net = importlib.import_module("risurconv_cls").get_model(40, 2, normal_channel=True)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    pos = torch.rand(batch, points, 3, device=device) * 2 - 1
    cloud = torch.cat([pos, F.normalize(torch.randn_like(pos), dim=-1)], dim=-1)
    category = torch.randint(0, 16, (batch,), device=device)
    label = torch.randint(0, 50, (batch * points,), device=device) if seg else category
    # the part-segmentation forward moves its one-hot with .cuda(): a no-op for a CPU run
    on_cpu = mock.patch.object(torch.Tensor, "cuda", lambda t, *a, **k: t) if device == "cpu" else nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with on_cpu:
            out = net(cloud, F.one_hot(category, 16).float())[0] if seg else net(cloud)[0]
        F.nll_loss(out.reshape(-1, out.shape[-1]), label).backward()
        opt.step()

    return net, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=sorted(REFERENCE), help="one network (default: both)")
    parser.add_argument("--batch", type=int, help="batch size (default: the reference's)")
    parser.add_argument("--points", type=int, help="points per cloud (default: the reference's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="B = 4 (ratios then only indicative)")
    parser.add_argument("--released", type=Path, help="a checkout of the released code to run beside pointgeo's")
    args = parser.parse_args()
    print(f"device: {device_name(args.device)}")
    for name, ref in REFERENCE.items():
        if args.only and name != args.only:
            continue
        batch = 4 if args.quick else args.batch or int(ref["batch"])
        points = args.points or int(ref["points"])
        net, step = training_step(name, batch, points, args.device)
        m = measure(step, repeats=args.repeats, device=args.device)
        params = sum(p.numel() for p in net.parameters())
        print_against_reference(name, m, batch, points, params, ref)
        if args.released:
            del net, step
            released, released_step = released_training_step(args.released, name, batch, points, args.device)
            r = measure(released_step, repeats=args.repeats, device=args.device)
            print_measurement("released " + name, r, batch, points, sum(p.numel() for p in released.parameters()))
            now = {"samples_per_s": round(batch / r.seconds, 2), "peak_mib": r.peak_mib, "batch": batch,
                   "points": points}
            print_ratios(m, batch, now, label="the released code run here")
            del released, released_step


if __name__ == "__main__":
    main()

"""One training step (forward + backward + Adam step) of every registered classification network.

Prints time per step, samples/s, peak memory (sampled resident memory above the level before the warm-up step; on
GPU, CUDA's peak allocation) and parameter count, with the ratio of samples/s against the named reference network
(plain PointNet by default) measured in the same process.

    python benchmarks/bench_train_step.py [--batch 32] [--points 1024] [--device cuda] [--reference pointnet]
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse

import torch
import torch.nn.functional as F

from common import device_name, measure

from pointgeo.registry import create_model, list_models


def step_fn(name: str, batch: int, points: int, device: str):  # noqa: ANN201
    torch.manual_seed(0)
    net = create_model(name, num_classes=40, use_normals=False).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    pos = torch.rand(batch, points, 3, device=device) * 2 - 1
    label = torch.randint(0, 40, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(pos, None), label).backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", default="pointnet")
    parser.add_argument("--models", default="*", help="shell pattern over registry names")
    parser.add_argument("--quick", action="store_true", help="B = 8, N = 256")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.points = 8, 256
    names = list_models(args.models, task="classification")
    names = [args.reference] + [n for n in names if n != args.reference]
    print(f"device: {device_name(args.device)}; B = {args.batch}, N = {args.points}; "
          f"ratio = samples/s relative to {args.reference}")
    reference = None
    for name in names:
        step, params = step_fn(name, args.batch, args.points, args.device)
        m = measure(step, repeats=3, device=args.device)
        rate = args.batch / m.seconds
        reference = reference or rate
        print(f"{name:<18} {1000 * m.seconds:9.1f} ms/step  {rate:8.1f} samples/s  {m.peak_mib:8.1f} MiB  "
              f"{params / 1e6:6.2f} M params  {rate / reference:5.2f}x")


if __name__ == "__main__":
    main()

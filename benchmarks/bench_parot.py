"""PaRot training speed and memory against the released code's figures on the same 2-core CPU machines.

Reference (measured with the original code, forward of both siamese branches + backward + Adam step): classification
2.0 samples/s with 6.4 GB peak at B = 32, N = 1024. This script runs pointgeo's training step (the task's loss: label-
smoothed cross-entropy plus the weighted direction and orthogonality losses) and prints samples/s, peak memory, the
parameter count and the ratios (throughput: ours / reference; memory: reference / ours; both should be >= 2).

    python benchmarks/bench_parot.py [--quick] [--device cuda] [--batch 32] [--points 1024]
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse

import torch
import torch.nn.functional as F

from common import device_name, measure, print_against_reference

from pointgeo.registry import create_model
from pointgeo.tasks.parot import DEFAULT_LOSS_WEIGHTS

REFERENCE = {"parot_cls": {"samples_per_s": 2.0, "peak_mib": 6.4 * 1024, "batch": 32, "points": 1024}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="B = 4 (ratios then only indicative)")
    args = parser.parse_args()
    if args.quick:
        args.batch = 4
    print(f"device: {device_name(args.device)}")
    for name, ref in REFERENCE.items():
        torch.manual_seed(0)
        net = create_model(name, num_classes=40).to(args.device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-6)
        pos = torch.rand(args.batch, args.points, 3, device=args.device) * 2 - 1
        label = torch.randint(0, 40, (args.batch,), device=args.device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            logits, losses = net.forward_siamese(pos)
            loss = F.cross_entropy(logits, label, label_smoothing=0.2 * 40 / 39)
            loss = loss + sum(DEFAULT_LOSS_WEIGHTS[key] * value for key, value in losses.items())
            loss.backward()
            opt.step()

        m = measure(step, repeats=args.repeats, device=args.device)
        print_against_reference(name, m, args.batch, args.points, sum(p.numel() for p in net.parameters()), ref)


if __name__ == "__main__":
    main()

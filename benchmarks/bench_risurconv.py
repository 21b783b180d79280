"""RISurConv training speed and memory against the released code's figures on the same 2-core CPU machines.

Reference (measured with the original code and its pure-torch fallbacks, forward + backward + Adam step):
classification 2.4 samples/s with 5.3 GB peak at B = 32, N = 1024; part segmentation 0.39 samples/s with 12 GB at
B = 16, N = 2048. This script runs the same step on pointgeo's networks and prints samples/s, peak memory (resident
memory above the level before the warm-up step, sampled every millisecond; CUDA's peak allocation on GPU), the
parameter count, and the ratios (throughput: ours / reference; memory: reference / ours; both should be >= 2).

    python benchmarks/bench_risurconv.py [--quick] [--device cuda] [--batch 32] [--points 1024]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import device_name, measure

from pointgeo.registry import create_model

REFERENCE = {"risurconv_cls": {"samples_per_s": 2.4, "peak_mib": 5.3 * 1024, "batch": 32, "points": 1024}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="B = 4 (ratios then only indicative)")
    args = parser.parse_args()
    if args.quick:
        args.batch = 4
    print(f"device: {device_name(args.device)}")
    for name, ref in REFERENCE.items():
        torch.manual_seed(0)
        net = create_model(name, num_classes=40, use_normals=True).to(args.device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        pos = torch.rand(args.batch, args.points, 3, device=args.device) * 2 - 1
        normal = F.normalize(torch.randn_like(pos), dim=-1)
        label = torch.randint(0, 40, (args.batch,), device=args.device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(pos, normal), label).backward()
            opt.step()

        m = measure(step, repeats=args.repeats, device=args.device)
        rate = args.batch / m.seconds
        params = sum(p.numel() for p in net.parameters())
        print(f"{name}: B={args.batch} N={args.points}  {m.seconds:6.2f} s/step  {rate:6.2f} samples/s  "
              f"{m.peak_mib:8.0f} MiB peak  {params / 1e6:.2f} M params")
        print(f"  vs released code (B={ref['batch']}, N={ref['points']}: {ref['samples_per_s']} samples/s, "
              f"{ref['peak_mib']:.0f} MiB): throughput {rate / ref['samples_per_s']:.2f}x, "
              f"memory {ref['peak_mib'] / max(m.peak_mib, 1):.2f}x less")


if __name__ == "__main__":
    main()

"""APEN's training-step cost against the number of points and of candidate parts, beside a named reference.

One training step is APEN's recipe: forward through ``segment``, the vote loss of every block
(:func:`pointgeo.tasks.apen.vote_loss`: squared distance of the seeds ``x_i + Δ_i`` to the centre of the point's
true part) plus 0.1 × cross-entropy, backward, gradient-norm clip 0.1 and an AdamW
step, on articulated shapes of :mod:`pointgeo.datamodules.articulated` (three or four rigid parts). For every
number of points ``N`` the reference segmentation network (plain PointNet by default) takes the same step with
cross-entropy in the same process, and APEN runs once per candidate count ``K`` (the initial FPS + random seeds of
its EM partition loop). Every configuration runs in a fresh process (so the allocator keeps nothing of the previous
one); it prints the median time per step, peak memory (sampled resident memory above the level before the warm-up
step; on GPU, CUDA's peak allocation) and the ratios to the reference at the same ``N``. A configuration that takes
longer than ``--budget`` seconds in all (set-up, warm-up and timed steps) is stopped and reported as over the
budget, and so are the ones that cost more (more candidates at its ``N``, more points at its ``K``), so a run ends
in bounded time: at most one stopped configuration per ``N`` and ``K``.

    python benchmarks/bench_apen.py [--points 1024,4096,16384] [--candidates 10,20,40] [--batch 2]
                                    [--size small|released] [--device cuda] [--reference pointnet_seg]
                                    [--budget 120]

``--size small`` is a CPU-sized APEN (two blocks, 17 EM iterations, about 0.1 M parameters); ``released``
the released defaults (four blocks, 65 EM iterations, 4.3 M parameters).
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse
import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from common import Measurement, device_name, measure

from pointgeo.datamodules.articulated import NUM_PARTS, generate_articulated
from pointgeo.registry import create_model
from pointgeo.tasks.apen import vote_loss

SIZES: dict[str, dict[str, object]] = {
    "small": {"em_period": 8, "blocks": ((0, 0, 4, 4), (4, 4, 8, 8)), "base": 2, "head": (64, 32),
              "decoder_multipliers": (2, 3), "k": 8, "variances": (0.2, 0.003)},
    "released": {},
}
"""Network widths of each ``--size`` (``released``: the builder's defaults)."""
VOTE_WEIGHT, CE_WEIGHT, CLIP = 1.0, 0.1, 0.1
"""APEN's loss weights (vote, cross-entropy) and gradient-norm clip."""


def batch_of(batch: int, points: int, device: str) -> dict[str, torch.Tensor]:
    """Articulated shapes (float32 on ``device``): ``pos``, ``normal``, ``seg``, ``category``."""
    arrays = generate_articulated(max(batch, 3), points, seed=0).arrays
    out = {"pos": torch.from_numpy(arrays.pos[:batch]), "normal": torch.from_numpy(arrays.normal[:batch]),
           "seg": torch.from_numpy(arrays.seg[:batch]), "category": torch.from_numpy(arrays.category[:batch])}
    return {k: v.to(device) for k, v in out.items()}


def apen_step(data: dict[str, torch.Tensor], candidates: int, size: str, device: str):  # noqa: ANN201
    torch.manual_seed(0)
    net = create_model("apen", num_parts=NUM_PARTS, num_categories=3, use_normals=True, candidates=candidates,
                       **SIZES[size]).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = net.segment(data["pos"], data["normal"], data["category"])
        vote = vote_loss(out.seeds, data["pos"], data["seg"])
        loss = VOTE_WEIGHT * vote + CE_WEIGHT * F.cross_entropy(out.logits.flatten(0, 1), data["seg"].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def reference_step(name: str, data: dict[str, torch.Tensor], device: str):  # noqa: ANN201
    torch.manual_seed(0)
    net = create_model(name, num_parts=NUM_PARTS, num_categories=3, use_normals=False).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = net(data["pos"], None, data["category"])
        F.cross_entropy(logits.flatten(0, 1), data["seg"].flatten()).backward()
        opt.step()

    return step, sum(p.numel() for p in net.parameters())


def row(name: str, m: Measurement, params: int, reference: Measurement | None) -> str:
    ratio = "" if reference is None else (f"  {m.seconds / reference.seconds:6.1f}x time  "
                                          f"{m.peak_mib / max(reference.peak_mib, 1.0):6.1f}x memory")
    return f"{name:<26} {1000 * m.seconds:10.1f} ms/step {m.peak_mib:9.1f} MiB {params / 1e6:6.3f} M params{ratio}"


def run_one(network: str, points: int, candidates: int, args: argparse.Namespace) -> tuple[Measurement, int]:
    """Measure one configuration in this process (``--one``)."""
    data = batch_of(args.batch, points, args.device)
    step, params = (apen_step(data, candidates, args.size, args.device) if network == "apen" else
                    reference_step(network, data, args.device))
    return measure(step, repeats=args.repeats, device=args.device), params


def isolated(network: str, points: int, candidates: int, args: argparse.Namespace
             ) -> tuple[Measurement, int] | None:
    """Measure one configuration in a fresh interpreter; ``None`` when it takes more than ``args.budget`` s."""
    command = [sys.executable, __file__, "--one", f"{network},{points},{candidates}", "--batch", str(args.batch),
               "--size", args.size, "--device", args.device, "--repeats", str(args.repeats)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.budget)
    except subprocess.TimeoutExpired:
        return None
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Measurement(figures["seconds"], figures["peak_mib"]), figures["params"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="1024,4096,16384", help="comma-separated numbers of points")
    parser.add_argument("--candidates", default="10,20,40", help="comma-separated candidate part counts K")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", default="pointnet_seg", help="registry name of the reference network")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per configuration (after a warm-up)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds one configuration may take in all before it is stopped (default 120)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # NETWORK,N,K: measure one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        network, n, k = args.one.split(",")
        m, params = run_one(network, int(n), int(k), args)
        print(json.dumps({"seconds": m.seconds, "peak_mib": m.peak_mib, "params": params}))
        return
    points = [int(p) for p in args.points.split(",")]
    candidates = [int(k) for k in args.candidates.split(",")]
    print(f"device: {device_name(args.device)}; B = {args.batch}; APEN size {args.size}; ratios against "
          f"{args.reference} at the same N (time ours / reference, memory ours / reference)")
    over = f"over the {args.budget:g} s budget"
    stopped: set[int] = set()  # candidate counts over the budget at a smaller N
    for n in sorted(points):
        print(f"N = {n}")
        ref = isolated(args.reference, n, 0, args)
        reference = None if ref is None else ref[0]
        print(f"  {args.reference:<24} {over}" if ref is None else row(f"  {args.reference}", ref[0], ref[1], None),
              flush=True)
        for k in sorted(candidates):
            done = None if k in stopped or (stopped and k > min(stopped)) else isolated("apen", n, k, args)
            if done is None:
                stopped.add(k)
                print(f"  {'apen K=' + str(k):<24} {over} (or a cheaper configuration was)", flush=True)
                continue
            print(row(f"  apen K={k}", done[0], done[1], reference), flush=True)


if __name__ == "__main__":
    main()

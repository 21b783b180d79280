"""kNN and farthest point sampling at N = 1k ... 256k points: pointgeo against named references.

References, run in the same process on the same clouds: a brute-force version (full distance matrix, skipped when it
would not fit in memory), and scipy's cKDTree, fpsample and Open3D where they are installed. Ratios are
``reference time / pointgeo time`` (above 1: pointgeo is faster). Memory is the peak resident memory above the
level before the first (warm-up) run (sampled every millisecond; on GPU, CUDA's peak allocation).

    python benchmarks/bench_geometry.py [--quick] [--device cuda]
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse

import numpy as np
import torch

from common import device_name, measure

from pointgeo.geometry import farthest_point_sampling, knn

K = 16
BRUTE_LIMIT = 2**28  # entries of the full distance matrix the brute force may build


def brute_knn(q: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cdist(q, p).topk(k, dim=-1, largest=False).indices


def brute_fps(pos: torch.Tensor, m: int) -> torch.Tensor:
    """Farthest point sampling that recomputes all distances to the chosen set at every step."""
    b, n, _ = pos.shape
    chosen = torch.zeros(b, 1, dtype=torch.long, device=pos.device)
    batch = torch.arange(b, device=pos.device)[:, None]
    for _ in range(m - 1):
        d = torch.cdist(pos, pos[batch, chosen]).amin(-1)
        chosen = torch.cat([chosen, d.argmax(-1, keepdim=True)], 1)
    return chosen


def references_knn(q: np.ndarray, p: np.ndarray) -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        from scipy.spatial import cKDTree

        out["scipy cKDTree"] = lambda: [cKDTree(p[b]).query(q[b], K, workers=-1) for b in range(len(p))]
    except ImportError:
        pass
    try:
        import open3d.core as o3c

        def o3d_knn() -> None:
            for b in range(len(p)):
                nns = o3c.nns.NearestNeighborSearch(o3c.Tensor(p[b]))
                nns.knn_index()
                nns.knn_search(o3c.Tensor(q[b]), K)

        out["open3d nns"] = o3d_knn
    except ImportError:
        pass
    return out


def references_fps(p: np.ndarray, m: int) -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        import fpsample

        out["fpsample (kd-line)"] = lambda: [fpsample.bucket_fps_kdline_sampling(p[b], m, h=5) for b in range(len(p))]
    except ImportError:
        pass
    return out


def row(name: str, n: int, b: int, what: str, t: float, mem: float, ratios: dict[str, float]) -> None:
    extra = "  ".join(f"{k}: {v:5.2f}x" for k, v in ratios.items())
    print(f"{name:<5} N={n:>6} B={b:<2} {what:<18} {1000 * t:9.1f} ms  {mem:8.1f} MiB   {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only N = 1k and 4k")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sizes = [1024, 4096] if args.quick else [1024, 4096, 16384, 65536, 262144]
    print(f"device: {device_name(args.device)}; k = {K}; ratio = reference time / pointgeo time")
    for n in sizes:
        b = 8 if n <= 16384 else 1
        m = min(n // 4, 4096)
        pos = torch.rand(b, n, 3, device=args.device)
        query = pos[:, :m]
        ours = measure(lambda: knn(query, pos, K), device=args.device)
        ratios = {}
        if b * m * n <= BRUTE_LIMIT:
            ratios["brute cdist+topk"] = measure(lambda: brute_knn(query, pos, K), device=args.device).seconds / ours.seconds
        qn, pn = query.cpu().numpy(), pos.cpu().numpy()
        for name, fn in references_knn(qn, pn).items():
            ratios[name] = measure(fn).seconds / ours.seconds  # type: ignore[arg-type]
        row("kNN", n, b, f"{m} queries", ours.seconds, ours.peak_mib, ratios)

        ours = measure(lambda: farthest_point_sampling(pos, m), repeats=1 if n > 16384 else 3, device=args.device)
        ratios = {}
        if n <= 4096:
            ratios["brute recompute"] = measure(lambda: brute_fps(pos, m), repeats=1, device=args.device).seconds / ours.seconds
        for name, fn in references_fps(pn, m).items():
            ratios[name] = measure(fn, repeats=1).seconds / ours.seconds  # type: ignore[arg-type]
        row("FPS", n, b, f"to {m} points", ours.seconds, ours.peak_mib, ratios)


if __name__ == "__main__":
    main()

"""Registration inference per 3DMatch pair: pointgeo's RoITr against the released RoITr code run in this process, and
against FPFH + RANSAC; time (median of repeats) and peak memory (sampled RSS above the level before the first run).

The pair is the shared GeoTransformer demo pair (two real 3DMatch scans), averaged into 2.5 cm voxels — the
benchmark's density — and capped at ``--max-points`` per cloud (RoITr keeps 30 000; below the cloud's size, a ball
of that many points around its centroid, at the same density). Both networks run in eval mode
without gradients, with the paper's sizes and untrained weights (no weights are published for pointgeo here, and
the speed of a forward does not depend on them), on the same clouds:

* pointgeo: ``RegistrationTask(network="roitr").net(src, tgt)`` (descriptors, coarse-to-fine matching), and one
  warm ``register_pair`` call end to end (with the deterministic LGR estimator);
* released (``--released PATH``, a checkout of haoyu94/RoITr): ``RIGA_v2(config).forward(...)`` with the config of
  its ``configs/test/tdmatch.yaml``, the inputs its test loader builds (Open3D normals over 33 neighbours flipped
  towards the view point, features of ones, the ground-truth pose its forward needs). Its CUDA extension
  ``pointops_cuda`` cannot run on a CPU and the checkout ships no torch fallback of its own, so this benchmark
  replaces, at runtime and for the released model's calls only, ``pointops.furthestsampling`` and ``knnquery``
  by pure-torch equivalents (below), ``torch.cuda.IntTensor`` / ``FloatTensor`` by CPU tensors and
  ``Tensor.cuda()`` by the identity. The checkout needs ``einops`` and ``easydict`` (``pip install einops
  easydict``). Nothing of it is copied into pointgeo; when it cannot be imported or run, the benchmark says why;
* FPFH + RANSAC + ICP (Open3D, :func:`pointgeo.geometry.registration.register_fpfh_ransac`, 2.5 cm voxels).

Ratios: time released / pointgeo (> 1: pointgeo faster) and peak memory released / pointgeo; FPFH likewise. Each
peak is measured after handing freed memory back to the system (``malloc_trim``), warm-up run included.

    python benchmarks/bench_registration.py --released /path/to/RoITr [--repeats 2] [--max-points 30000]
"""

from __future__ import annotations

import common  # noqa: F401  (first: it opts in to pointgeo's CPU memory settings before torch starts)
import argparse
import contextlib
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from common import Measurement, device_name, measure

from pointgeo.datamodules.registration_readers import read_fragment
from pointgeo.geometry import voxel_downsample
from pointgeo.geometry.registration import register_fpfh_ransac
from pointgeo.tasks import RegistrationTask

DEMO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "3dmatch" / "geotransformer" / "data" / "demo"


class ReleasedUnavailable(RuntimeError):
    """The released code could not be imported or run here (the message says why)."""


def load_pair(folder: Path, voxel: float, max_points: int) -> tuple[torch.Tensor, ...]:
    """Source, target ``(N, 3)`` float32 at ``voxel`` and the pose ``(4, 4)`` float64 mapping source into target.
    A cloud above ``max_points`` keeps its ``max_points`` points nearest its centroid (a ball: the density stays
    the voxel's, where a random subset would thin it)."""
    clouds = []
    for name in ("src.npy", "ref.npy"):
        points = voxel_downsample(torch.from_numpy(read_fragment(folder / name)), voxel)
        if len(points) > max_points:
            distance = (points - points.mean(0)).norm(dim=-1)
            points = points[distance.topk(max_points, largest=False).indices.sort().values]
        clouds.append(points.float())
    return clouds[0], clouds[1], torch.from_numpy(np.load(folder / "gt.npy", allow_pickle=False))


# --- pure-torch equivalents of the released code's CUDA operators ----------------------------------------------
def _segments(offset: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, end)]`` of each batch element from cumulative counts ``offset (b,)``."""
    ends = [int(v) for v in offset.tolist()]
    return list(zip([0] + ends[:-1], ends))


def torch_knnquery(nsample: int, xyz: torch.Tensor, new_xyz: torch.Tensor | None, offset: torch.Tensor,
                   new_offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``knnquery``: for every query of ``new_xyz`` the ``nsample`` nearest points of its batch element of ``xyz``,
    ``(idx int32 (m, nsample) global indices, dist (m, nsample))``, nearest first (distances, not squared)."""
    new_xyz = xyz if new_xyz is None else new_xyz
    idx, dist = [], []
    for (s, e), (qs, qe) in zip(_segments(offset), _segments(new_offset)):
        points, queries = xyz[s:e], new_xyz[qs:qe]
        for start in range(0, len(queries), 4096):  # chunks keep the distance matrix small
            d = torch.cdist(queries[start:start + 4096], points)
            values, found = d.topk(min(nsample, len(points)), dim=1, largest=False)
            idx.append(found + s)
            dist.append(values)
    return torch.cat(idx).int(), torch.cat(dist)


def torch_furthestsampling(xyz: torch.Tensor, offset: torch.Tensor, new_offset: torch.Tensor) -> torch.Tensor:
    """``furthestsampling``: farthest point sampling per batch element, starting at its first point as the CUDA
    kernel does; ``(m,)`` int32 global indices."""
    picked = []
    for (s, e), (ns, ne) in zip(_segments(offset), _segments(new_offset)):
        points = xyz[s:e]
        nearest = torch.full((len(points),), float("inf"), dtype=points.dtype)
        current = 0
        chosen = torch.empty(ne - ns, dtype=torch.long)
        for k in range(ne - ns):
            chosen[k] = current
            nearest = torch.minimum(nearest, ((points - points[current]) ** 2).sum(-1))
            current = int(nearest.argmax())
        picked.append(chosen + s)
    return torch.cat(picked).int()


@contextlib.contextmanager
def cpu_cuda() -> Iterator[None]:
    """While active: ``Tensor.cuda()`` is the identity and ``torch.cuda.IntTensor`` / ``FloatTensor`` build CPU
    tensors (the released code allocates its buffers with them)."""
    def legacy(dtype: torch.dtype) -> Callable:
        def build(*args: object) -> torch.Tensor:  # IntTensor([values]) holds data, IntTensor(m, k) a size
            if len(args) == 1 and isinstance(args[0], (list, tuple)):
                return torch.tensor(args[0], dtype=dtype)
            return torch.zeros(*args, dtype=dtype)
        return build

    saved = (torch.Tensor.cuda, torch.cuda.IntTensor, torch.cuda.FloatTensor)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.IntTensor, torch.cuda.FloatTensor = legacy(torch.int32), legacy(torch.float32)
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.cuda.IntTensor, torch.cuda.FloatTensor = saved


def released_model(path: Path) -> tuple[torch.nn.Module, Callable]:
    """The released ``RIGA_v2`` built from its test config, and its repository's ``normal_redirect``."""
    if not (path / "model" / "RIGA_v2.py").is_file():
        raise ReleasedUnavailable(f"{path} is not a RoITr checkout (no model/RIGA_v2.py)")
    sys.path.insert(0, str(path))
    sys.modules.setdefault("pointops_cuda", types.ModuleType("pointops_cuda"))  # every use is replaced below
    try:
        import yaml
        from easydict import EasyDict

        from cpp_wrappers.pointops.functions import pointops
        import lib.utils as released_utils

        pointops.knnquery = released_utils.knnquery = torch_knnquery
        pointops.furthestsampling = torch_furthestsampling
        from dataset.common import normal_redirect
        from model.RIGA_v2 import create_model
    except ImportError as exc:
        raise ReleasedUnavailable(f"the released code does not import here: {exc} (it needs einops and easydict: "
                                  f"pip install einops easydict)") from exc
    sections = yaml.safe_load((path / "configs" / "test" / "tdmatch.yaml").read_text())
    config = EasyDict({k: v for section in sections.values() for k, v in section.items()})
    config.benchmark, config.mode = "3DMatch", "test"
    with cpu_cuda():
        model = create_model(config).eval()
    return model, normal_redirect


def released_inputs(src: torch.Tensor, tgt: torch.Tensor, pose: torch.Tensor, normal_redirect: Callable) -> tuple:
    """What the released test loader gives its model: points, features of ones, Open3D normals (33 neighbours)
    flipped towards the view point (0, 0, 0), the ground-truth rotation and translation, the raw source."""
    import open3d as o3d

    normals = []
    for cloud in (src, tgt):
        o3d_cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.double().numpy()))
        o3d_cloud.estimate_normals(search_param=o3d.geometry.KDTreeSearchParamKNN(knn=33))
        flipped = normal_redirect(cloud.numpy(), np.asarray(o3d_cloud.normals), view_point=np.zeros(3))
        normals.append(torch.from_numpy(np.asarray(flipped, dtype=np.float32)))
    ones = torch.ones(len(src), 1), torch.ones(len(tgt), 1)
    return (src.contiguous(), tgt.contiguous(), ones[0], ones[1], normals[0], normals[1], pose[:3, :3].float(),
            pose[:3, 3:].float(), src.contiguous())


def release_free_memory() -> None:
    """Hand memory freed by the previous runs back to the system (glibc's ``malloc_trim``), so that each peak is
    measured from the same baseline; a no-op where the C library has no ``malloc_trim``."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def report(name: str, m: Measurement, params: int | None, extra: str = "") -> None:
    count = f"  {params / 1e6:.2f} M params" if params is not None else ""
    print(f"{name}: {m.seconds:7.2f} s/pair  {m.peak_mib:8.0f} MiB peak{count}{extra}")


def ratio(label: str, ours: Measurement, theirs: Measurement, name: str) -> None:
    print(f"  vs {label}: time {theirs.seconds / ours.seconds:.2f}x ({name} {theirs.seconds:.2f} s), memory "
          f"{theirs.peak_mib / max(ours.peak_mib, 1):.2f}x ({name} {theirs.peak_mib:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--released", type=Path, help="a checkout of haoyu94/RoITr (skipped with a note if absent)")
    parser.add_argument("--pair", type=Path, default=DEMO, help="folder with src.npy, ref.npy, gt.npy")
    parser.add_argument("--voxel", type=float, default=0.025)
    parser.add_argument("--max-points", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    src, tgt, pose = load_pair(args.pair, args.voxel, args.max_points)
    print(f"device: {device_name('cpu')}")
    print(f"pair: {args.pair.name} at {args.voxel:g} m voxels, source {len(src)} points, target {len(tgt)} points")

    task = RegistrationTask(network="roitr").eval()
    params = sum(p.numel() for p in task.net.parameters())
    with torch.no_grad():
        release_free_memory()
        ours = measure(lambda: task.net(src, tgt), repeats=args.repeats)
        out = task.net(src, tgt)
    report("pointgeo RoITr forward", ours, params, f"  ({len(out.correspondences)} correspondences)")
    start = time.perf_counter()  # one warm call: the forward above plus the estimator
    result = task.register_pair(src, tgt)
    print(f"pointgeo RoITr register_pair (LGR), one call: {time.perf_counter() - start:7.2f} s/pair  "
          f"(success {result.success})")

    released = None
    if args.released is None:
        print("released RoITr: not run (pass --released PATH, a checkout of haoyu94/RoITr)")
    else:
        try:
            model, normal_redirect = released_model(args.released)
            inputs = released_inputs(src, tgt, pose, normal_redirect)
            released_params = sum(p.numel() for p in model.parameters())

            def forward() -> dict:
                with cpu_cuda(), torch.no_grad():
                    return model(*inputs)

            release_free_memory()
            released = measure(forward, repeats=args.repeats)
            theirs = forward()
            report("released RoITr forward (CUDA ops -> torch)", released, released_params,
                   f"  ({len(theirs['corr_scores'])} correspondences)")
            ratio("released RoITr", ours, released, "released")
        except ReleasedUnavailable as exc:
            print(f"released RoITr: not run: {exc}")
        except Exception as exc:  # noqa: BLE001  (the released code on an unsupported device: report, do not crash)
            print(f"released RoITr: failed on this machine: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=-3)

    release_free_memory()
    fpfh = measure(lambda: register_fpfh_ransac(src, tgt, voxel_size=args.voxel), repeats=args.repeats)
    fpfh_result = register_fpfh_ransac(src, tgt, voxel_size=args.voxel)[0]
    report("FPFH + RANSAC + ICP (Open3D)", fpfh, None, f"  (success {fpfh_result.success})")
    ratio("FPFH + RANSAC", ours, fpfh, "FPFH")


if __name__ == "__main__":
    main()

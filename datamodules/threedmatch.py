"""3DMatch / 3DLoMatch fragment pairs for registration (Zeng et al., CVPR 2017; the PREDATOR split of Huang et al.,
CVPR 2021, used by GeoTransformer and RoITr), in either project's layout, with the rotated benchmark.

Layouts (every folder can also be given explicitly: ``data_dir``, ``metadata_dir``, ``benchmark_dir``):

* ``predator``: fragments ``root/data/indoor/{train,test}/<scene>/cloud_bin_<k>.pth``; metadata
  ``root/configs/indoor/{train_info,val_info,3DMatch,3DLoMatch}.pkl``; benchmark
  ``root/configs/benchmarks/<bench>/<scene>/{gt.log,gt.info,gt_overlap.log}``.
* ``geotransformer``: fragments ``root/data/{train,test}/<scene>/cloud_bin_<k>.pth``; metadata
  ``root/metadata/{train,val,3DMatch,3DLoMatch}.pkl``; benchmark ``root/benchmarks/<bench>/<scene>/...``.

(``root`` is a PREDATOR checkout: its ``data.zip`` extracts ``data/indoor/...``, and the metadata and benchmark files
are its repository's ``configs/``, downloaded from there with pinned sha256s. GeoTransformer's ``root`` is its
``data/3DMatch`` folder.)

A sample is a :class:`FragmentPair` (torch-geometric ``Data``; batches are built with ``follow_batch`` so that each
cloud has its own batch vector):

| key | shape, dtype | meaning |
|---|---|---|
| ``src_pos``, ``tgt_pos`` | ``(N, 3)``, ``(M, 3)`` float32 | source and target fragment, metres |
| ``src_pos_batch``, ``tgt_pos_batch`` | ``(N_total,)``, ``(M_total,)`` long | pair of each point (batches only) |
| ``transform`` | ``(1, 4, 4)`` float64 (``(B, 4, 4)`` batched) | ground truth, maps source into target |
| ``src_motion``, ``tgt_motion`` | ``(1, 4, 4)`` float64 | the rigid motion the datamodule applied to each cloud |
| ``overlap`` | ``(1,)`` float64 | the metadata's overlap ratio |
| ``scene`` | ``(1,)`` long | index into :attr:`ThreeDMatchDataModule.scenes` of the split |
| ``src_id``, ``tgt_id`` | ``(1,)`` long | fragment numbers ``k`` of ``cloud_bin_<k>`` |
| ``index`` | ``(1,)`` long | the pair's index in its split |
| ``information`` | ``(1, 6, 6)`` float64 | the ``gt.info`` matrix (test split, when the benchmark files are present) |

Which keys move under a rigid motion is :data:`pointgeo.geometry.FRAGMENT_PAIR_FIELDS` (the two clouds move
independently, ``transform`` follows both: ``pointgeo.geometry.apply_pair_motion``).

Rotations (about the fragments' own origin, the camera centre; no translation), applied to **one** cloud of each pair:

* ``test_rotation="none"``: the original benchmark.
* ``test_rotation="haar"``: the rotated benchmark, one Haar-uniform rotation per pair drawn from ``(seed, pair
  index)``, applied to the cloud named by ``rotated_cloud`` (``source`` or ``target``) — pointgeo's protocol.
* ``test_rotation="roitr_euler"``: RoITr's own protocol, to compare with its paper: ``np.random.seed(pair index)``,
  Euler angles ``zyx`` uniform in ``[0, 2π)³`` (not Haar-uniform on SO(3)), applied to the source when the next draw
  exceeds 0.5, else to the target (``rotated_cloud`` is ignored).
* ``train_rotation="haar"``: a fresh Haar rotation per pair and epoch from ``(seed, epoch, index)``, on the source or
  the target with probability ½ (RoITr's augmentation with Haar rotations); ``augment_noise`` adds uniform noise
  ``(u − ½) · augment_noise`` to every training coordinate (RoITr: 0.005 m).

Preprocessing, cached under ``root/processed/`` by a hash of every setting: fragments are averaged into voxels of
``voxel_size`` (``None``: kept as shipped; PREDATOR's files are already voxelised) by
:func:`pointgeo.geometry.voxel_downsample`, then clouds above ``max_points`` keep a random subset drawn from
``(seed, fragment)`` (RoITr keeps 30 000). Fragments and metadata are pickles, read by the restricted unpickler of
:mod:`pointgeo.datamodules.registration_readers`, which executes nothing from the file.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data
from torch_geometric.loader.dataloader import Collater
from tqdm.auto import tqdm

from pointgeo.datamodules.base import EpochSampler, ResumableLoader, SplitLoaders, sample_seed
from pointgeo.datamodules.readers import DatasetFileError
from pointgeo.datamodules.registration_readers import BenchmarkScene, PairTable, read_benchmark, read_fragment, \
    read_pair_metadata
from pointgeo.datamodules.release import DatasetNotFoundError, ensure_release, load_processed, processed_path, \
    save_atomic
from pointgeo.download import DownloadError, cache_dir, download
from pointgeo.geometry import FRAGMENT_PAIR_FIELDS, apply_pair_motion, random_rotations, voxel_downsample

Layout = Literal["predator", "geotransformer"]
Benchmark = Literal["3DMatch", "3DLoMatch"]
TestRotation = Literal["none", "haar", "roitr_euler"]
RotatedCloud = Literal["source", "target"]

FRAGMENTS_URL = "https://share.phys.ethz.ch/~gseg/Predator/data.zip"
"""PREDATOR's preprocessed fragments (~936 MB; no published checksum, so not hash-verified). The host moved from
``~gsg`` to ``~gseg`` in 2025 and has answered 403/404 at times: the error then says where to place the archive."""
PREDATOR = "https://raw.githubusercontent.com/prs-eth/OverlapPredator/8c78f125fc58d62ad7d149adf1fed43ed54937e4"
GEOTRANSFORMER = "https://raw.githubusercontent.com/qinzheng93/GeoTransformer/e7a135af4c318ff3b8d7f6c963df094d7e4ea540"
METADATA: dict[Layout, dict[str, tuple[str, str, str | None]]] = {
    "predator": {
        "train": ("train_info.pkl", f"{PREDATOR}/configs/indoor/train_info.pkl", None),
        "val": ("val_info.pkl", f"{PREDATOR}/configs/indoor/val_info.pkl",
                "c8079be51517d7eb01575394946f7eb606115c261f92cf30bfbfc144b6b31754"),
        "3DMatch": ("3DMatch.pkl", f"{PREDATOR}/configs/indoor/3DMatch.pkl",
                    "f8cde328ab4efa06a9192f03e37c10201df05835720ff4e187f6d4204637de1c"),
        "3DLoMatch": ("3DLoMatch.pkl", f"{PREDATOR}/configs/indoor/3DLoMatch.pkl",
                      "7a48383360357944fe6b6ad1f69f00152bdf528ff1148407d0d533e3593ed87c"),
    },
    "geotransformer": {
        "train": ("train.pkl", f"{GEOTRANSFORMER}/data/3DMatch/metadata/train.pkl", None),
        "val": ("val.pkl", f"{GEOTRANSFORMER}/data/3DMatch/metadata/val.pkl",
                "af42f9721b91e1fbee0c01609320cdc94594fa6f8909fcd436ed48efb3060406"),
        "3DMatch": ("3DMatch.pkl", f"{GEOTRANSFORMER}/data/3DMatch/metadata/3DMatch.pkl",
                    "390a959da36cd10abb924da366fb1a324e031913efec76a1ed4185bcfd3d7353"),
        "3DLoMatch": ("3DLoMatch.pkl", f"{GEOTRANSFORMER}/data/3DMatch/metadata/3DLoMatch.pkl",
                      "10dde0aa4198b9ee636c13ef0b94a6849af73d3f1b576dd28d43934721857550"),
    },
}
"""Per layout and split: the metadata file name, its official URL (at the commit read) and sha256 (``None``: the
file was not available to pin, so it is not verified)."""
BENCHMARK_URL = f"{PREDATOR}/configs/benchmarks"
"""The benchmark's ground truth: ``<bench>/<scene>/{gt.log,gt.info,gt_overlap.log}`` (identical in RoITr and
GeoTransformer)."""
TEST_SCENES = ("7-scenes-redkitchen", "sun3d-home_at-home_at_scan1_2013_jan_1",
               "sun3d-home_md-home_md_scan9_2012_sep_30", "sun3d-hotel_uc-scan3", "sun3d-hotel_umd-maryland_hotel1",
               "sun3d-hotel_umd-maryland_hotel3", "sun3d-mit_76_studyroom-76-1studyroom2",
               "sun3d-mit_lab_hj-lab_hj_tea_nov_2_2012_scan1_erika")
"""The 8 test scenes, in the benchmark's order (Kitchen, Home 1, Home 2, Hotel 1, Hotel 2, Hotel 3, Study, MIT Lab)."""
PREPROCESS_VERSION = 1


class FragmentPair(Data):
    """A registration pair of the table in the module docstring. Batching keeps ``index`` as the pair's index
    (torch-geometric would otherwise shift keys containing "index" like ``edge_index``)."""

    def __inc__(self, key: str, value, *args, **kwargs):
        return 0 if key == "index" else super().__inc__(key, value, *args, **kwargs)


FOLLOW_BATCH = ["src_pos", "tgt_pos"]
"""Collate with these so that ``src_pos_batch`` / ``tgt_pos_batch`` give each point's pair."""


def roitr_euler_rotation(index: int) -> tuple[np.ndarray, bool]:
    """RoITr's rotated-benchmark draw for pair ``index``: the rotation ``(3, 3)`` and whether it applies to the
    source (else the target): ``np.random.seed(index)``, ``Rotation.from_euler('zyx', rand(3) · 2π)``, then
    ``rand() > 0.5``."""
    from scipy.spatial.transform import Rotation  # noqa: PLC0415

    rng = np.random.RandomState(index)
    rotation = Rotation.from_euler("zyx", rng.rand(3) * 2 * np.pi).as_matrix()
    return rotation, bool(rng.rand(1)[0] > 0.5)


def pair_rotation(rotation: str, seed: int, epoch: int, index: int, *, train: bool,
                  rotated_cloud: RotatedCloud) -> tuple[torch.Tensor | None, bool]:
    """The rotation protocol's draw for pair ``index``: the rotation ``(3, 3)`` float64 (``None`` for ``none``) and
    whether it applies to the source (else the target). ``haar``: a Haar rotation from ``(seed, epoch, index)`` on a
    random cloud in training, from ``(seed, index)`` on ``rotated_cloud`` otherwise; ``roitr_euler``:
    :func:`roitr_euler_rotation`."""
    if rotation == "none":
        return None, True
    if rotation == "roitr_euler":
        rot, on_source = roitr_euler_rotation(index)
        return torch.from_numpy(rot), on_source
    gen = torch.Generator().manual_seed(sample_seed(seed, epoch, index) if train else sample_seed(seed, index))
    rot = random_rotations(1, generator=gen)[0]
    on_source = bool(torch.rand(1, generator=gen) < 0.5) if train else rotated_cloud == "source"
    return rot, on_source


class FragmentPairDataset(Dataset):
    """The pairs of one split: preprocessed fragments ``points`` (by relative path), the pair table, the rotation
    protocol. ``train``: items are ``(epoch, index)`` from :class:`~pointgeo.datamodules.base.EpochSampler`."""

    def __init__(self, pairs: PairTable, points: dict[str, np.ndarray], scenes: list[str], *, rotation: str,
                 rotated_cloud: RotatedCloud, seed: int, train: bool, augment_noise: float = 0.0,
                 information: np.ndarray | None = None) -> None:
        self.pairs = pairs
        self.points = points
        self.scene_index = {name: k for k, name in enumerate(scenes)}
        self.rotation = rotation
        self.rotated_cloud = rotated_cloud
        self.seed = seed
        self.train = train
        self.augment_noise = augment_noise
        self.information = information

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: int | tuple[int, int]) -> FragmentPair:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (0, int(item))
        p = self.pairs
        eye = torch.eye(4, dtype=torch.float64).unsqueeze(0)
        sample = {
            "src_pos": torch.from_numpy(self.points[p.source[index]]).float(),
            "tgt_pos": torch.from_numpy(self.points[p.target[index]]).float(),
            "transform": torch.from_numpy(p.transform[index]).unsqueeze(0),
        }
        rot, on_source = pair_rotation(self.rotation, self.seed, epoch, index, train=self.train,
                                       rotated_cloud=self.rotated_cloud)
        motion = {"src_motion": eye, "tgt_motion": eye}
        if rot is not None:
            side = "source" if on_source else "target"
            sample = apply_pair_motion(sample, FRAGMENT_PAIR_FIELDS, **{side: (rot, None)})
            moved = eye.clone()
            moved[0, :3, :3] = rot
            motion["src_motion" if on_source else "tgt_motion"] = moved
        if self.train and self.augment_noise > 0:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index, 1))
            for key in ("src_pos", "tgt_pos"):
                sample[key] = sample[key] + (torch.rand(sample[key].shape, generator=gen) - 0.5) * self.augment_noise
        out = FragmentPair(**sample, **motion, overlap=torch.tensor([p.overlap[index]], dtype=torch.float64),
                           scene=torch.tensor([self.scene_index[p.scene[index]]]),
                           src_id=torch.tensor([int(p.source_id[index])]),
                           tgt_id=torch.tensor([int(p.target_id[index])]), index=torch.tensor([index]))
        if self.information is not None:
            out.information = torch.from_numpy(self.information[index]).unsqueeze(0)
        return out


class PairSplits(SplitLoaders):
    """What every registration-pair datamodule shares: its splits built lazily by ``dataset(split)`` into
    ``self._datasets``, Lightning's ``setup`` building those a stage needs, and switching the validation and test
    splits' rotation protocol, and the loaders (one pair batch structure, ``FOLLOW_BATCH``; training resumable,
    in the seeded epoch order). Mixed in before ``pl.LightningDataModule``."""

    test_rotation: TestRotation
    _datasets: dict[str, Dataset]
    batch_size: int
    num_workers: int
    seed: int

    @abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The pairs of ``train``, ``val`` or ``test`` with their rotation protocol (built once)."""

    def set_test_rotation(self, mode: TestRotation) -> None:
        """Switch the validation and test splits' rotation protocol (``none``, ``haar`` or ``roitr_euler``)."""
        if mode not in ("none", "haar", "roitr_euler"):
            raise ValueError(f"test_rotation must be one of ['none', 'haar', 'roitr_euler']; got {mode!r}")
        self.test_rotation = mode
        for split in ("val", "test"):
            if split in self._datasets:
                self._datasets[split].rotation = mode

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            self.dataset(split)

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        train = split == "train"
        collate = Collater(dataset, follow_batch=FOLLOW_BATCH)
        return (ResumableLoader if train else DataLoader)(
            dataset, batch_size=self.batch_size, collate_fn=collate,
            sampler=EpochSampler(dataset, sample_seed(self.seed, 3)) if train else None, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(sample_seed(self.seed, 4)))


class ThreeDMatchDataModule(PairSplits, pl.LightningDataModule):
    """3DMatch / 3DLoMatch registration pairs (see the module docstring for layouts, keys and protocols).

    Args:
        root: the layout's root folder (default ``$POINTGEO_HOME/datasets/3dmatch``).
        layout: ``predator`` or ``geotransformer``.
        benchmark: the test split, ``3DMatch`` (overlap > 30 %) or ``3DLoMatch`` (10-30 %).
        data_dir, metadata_dir, benchmark_dir: override the layout's folders.
        download: fetch what is missing (fragments archive, metadata, benchmark files) from the official URLs.
        voxel_size: voxel edge in metres for downsampling (``None``: keep the shipped resolution).
        max_points: most points kept per fragment (seeded random subset).
        train_rotation: ``none`` or ``haar`` (see the module docstring).
        test_rotation: ``none``, ``haar`` or ``roitr_euler``; also used for validation.
        rotated_cloud: which cloud the ``haar`` test rotation applies to.
        augment_noise: uniform noise amplitude of training coordinates (metres).
        batch_size, num_workers, seed: loaders and every seeded choice.
    """

    fields = FRAGMENT_PAIR_FIELDS

    def __init__(self, root: str | None = None, layout: Layout = "predator", benchmark: Benchmark = "3DMatch", *,
                 data_dir: str | None = None, metadata_dir: str | None = None, benchmark_dir: str | None = None,
                 download: bool = False, voxel_size: float | None = None, max_points: int | None = 30_000,
                 train_rotation: Literal["none", "haar"] = "haar", test_rotation: TestRotation = "none",
                 rotated_cloud: RotatedCloud = "source", augment_noise: float = 0.005, batch_size: int = 1,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        checks = (("layout", layout, METADATA), ("benchmark", benchmark, ("3DMatch", "3DLoMatch")),
                  ("train_rotation", train_rotation, ("none", "haar")),
                  ("test_rotation", test_rotation, ("none", "haar", "roitr_euler")),
                  ("rotated_cloud", rotated_cloud, ("source", "target")))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")
        if voxel_size is not None and not voxel_size > 0:
            raise ValueError(f"voxel_size must be positive or None; got {voxel_size!r}")
        if max_points is not None and max_points < 1:
            raise ValueError(f"max_points must be positive or None; got {max_points!r}")
        self.save_hyperparameters()
        self.root = Path(root).expanduser() if root is not None else cache_dir() / "datasets" / "3dmatch"
        default = {"predator": ("data/indoor", "configs/indoor", "configs/benchmarks"),
                   "geotransformer": ("data", "metadata", "benchmarks")}[layout]
        self.data_dir, self.metadata_dir, self.benchmark_dir = (
            Path(given).expanduser() if given is not None else self.root / fallback
            for given, fallback in zip((data_dir, metadata_dir, benchmark_dir), default))
        self.layout, self.benchmark, self.download = layout, benchmark, download
        self.voxel_size, self.max_points = voxel_size, max_points
        self.train_rotation, self.test_rotation, self.rotated_cloud = train_rotation, test_rotation, rotated_cloud
        self.augment_noise, self.batch_size, self.num_workers, self.seed = augment_noise, batch_size, num_workers, seed
        self._datasets: dict[str, FragmentPairDataset] = {}
        self.scenes: dict[str, list[str]] = {}
        """Per split, the scene names its ``scene`` indices refer to (sorted; the test split's are ``TEST_SCENES``)."""

    # --- files -----------------------------------------------------------------------------------------------
    def metadata_path(self, split: str) -> Path:
        """The metadata file of ``train``, ``val`` or ``test``, downloaded when missing and ``download`` is set."""
        key = self.benchmark if split == "test" else split
        name, url, sha256 = METADATA[self.layout][key]
        path = self.metadata_dir / name
        if path.is_file():
            return path
        hint = (f"the {self.layout} pair metadata {name} is not at {path}. Download {url} and place it there"
                + ("" if self.download else ", or pass download=True"))
        if not self.download:
            raise DatasetNotFoundError(hint)
        try:
            return download(url, path, sha256=sha256)
        except DownloadError as exc:
            raise DatasetNotFoundError(f"{hint}. ({exc})") from exc

    def benchmark_scenes(self) -> dict[str, BenchmarkScene]:
        """The ground truth of the test benchmark's 8 scenes (downloaded when missing and ``download`` is set)."""
        folder = self.benchmark_dir / self.benchmark
        if self.download:
            for scene in TEST_SCENES:
                for name in ("gt.log", "gt.info", "gt_overlap.log"):
                    target = folder / scene / name
                    if not target.is_file():
                        try:
                            download(f"{BENCHMARK_URL}/{self.benchmark}/{scene}/{name}", target)
                        except DownloadError as exc:
                            raise DatasetNotFoundError(f"the benchmark file {target} is missing ({exc})") from exc
        if not folder.is_dir():
            raise DatasetNotFoundError(f"the {self.benchmark} ground truth is not in {folder}: place the folders "
                                       f"<scene>/gt.log, gt.info, gt_overlap.log from {BENCHMARK_URL}/{self.benchmark} "
                                       f"there, or pass download=True")
        return read_benchmark(folder)

    def _ensure_fragments(self, pairs: PairTable, metadata: Path) -> None:
        missing = [name for name in dict.fromkeys(pairs.source + pairs.target) if not (self.data_dir / name).is_file()]
        if not missing:
            return
        if not self.data_dir.exists():
            if self.layout == "predator" and self.download and self.data_dir == self.root / "data" / "indoor":
                ensure_release(FRAGMENTS_URL, self.root / "data", self.root, allow_download=True,
                               label="3DMatch (PREDATOR)")
                return self._ensure_fragments(pairs, metadata)
            raise DatasetNotFoundError(
                f"the 3DMatch fragments are not in {self.data_dir}. Download {FRAGMENTS_URL} (PREDATOR's "
                f"preprocessed release, which extracts to data/indoor/{{train,test}}) and "
                + (f"extract it into {self.root}, or pass download=True" if self.layout == "predator" else
                   f"move its data/indoor/{{train,test}} to {self.data_dir}/{{train,test}}"))
        raise DatasetFileError(f"{metadata} names the fragment {missing[0]}, but {self.data_dir / missing[0]} is "
                               f"missing ({len(missing)} missing fragments)")

    # --- preprocessing -----------------------------------------------------------------------------------------
    def _cache_path(self, split: str, names: list[str]) -> Path:
        listing = zlib.crc32("\n".join(names).encode())
        return processed_path(self.root, f"3dmatch_{self.layout}", split if split != "test" else self.benchmark,
                              [PREPROCESS_VERSION, self.layout, split, self.benchmark, self.voxel_size,
                               self.max_points, self.seed, str(self.data_dir), listing])

    def _preprocess(self, names: list[str]) -> dict[str, np.ndarray]:
        clouds = []
        for name in tqdm(names, desc="3DMatch: reading fragments"):
            points = read_fragment(self.data_dir / name)
            if self.voxel_size is not None:
                points = voxel_downsample(torch.from_numpy(points), self.voxel_size).numpy()
            if self.max_points is not None and len(points) > self.max_points:
                rng = np.random.default_rng(sample_seed(self.seed, zlib.crc32(name.encode())))
                points = points[np.sort(rng.permutation(len(points))[: self.max_points])]
            clouds.append(points.astype(np.float32))
        sizes = np.asarray([len(c) for c in clouds], dtype=np.int64)
        return {"points": np.concatenate(clouds), "sizes": sizes, "names": np.asarray(names)}

    def _load_points(self, split: str, pairs: PairTable, metadata: Path) -> dict[str, np.ndarray]:
        """The preprocessed fragments of ``pairs`` by name, from the cache (built from the fragments if missing)."""
        names = list(dict.fromkeys(pairs.source + pairs.target))
        path = self._cache_path(split, names)

        def build() -> None:
            self._ensure_fragments(pairs, metadata)
            save_atomic(path, self._preprocess(names))

        def convert(arrays) -> dict[str, np.ndarray]:
            if [str(n) for n in arrays["names"]] != names or arrays["sizes"].sum() != len(arrays["points"]):
                raise ValueError("the cached fragments do not match the metadata")
            bounds = np.concatenate([[0], np.cumsum(arrays["sizes"])])
            return {n: arrays["points"][bounds[k]: bounds[k + 1]] for k, n in enumerate(names)}

        return load_processed(path, build, convert)

    def _split_dataset(self, split: str) -> FragmentPairDataset:
        metadata = self.metadata_path(split)
        pairs = read_pair_metadata(metadata)
        points = self._load_points(split, pairs, metadata)
        information = None
        scenes = sorted(set(pairs.scene))
        if split == "test":
            unknown = sorted(set(pairs.scene) - set(TEST_SCENES))
            scenes = list(TEST_SCENES) + unknown
            if (self.benchmark_dir / self.benchmark).is_dir() or self.download:
                information = self._information(pairs, self.benchmark_scenes(), metadata)
        self.scenes[split] = scenes
        train = split == "train"
        rotation = self.train_rotation if train else self.test_rotation
        return FragmentPairDataset(pairs, points, scenes, rotation=rotation, rotated_cloud=self.rotated_cloud,
                                   seed=sample_seed(self.seed, {"train": 0, "val": 1, "test": 2}[split]), train=train,
                                   augment_noise=self.augment_noise if train else 0.0, information=information)

    @staticmethod
    def _information(pairs: PairTable, scenes: dict[str, BenchmarkScene], metadata: Path) -> np.ndarray:
        """The ``gt.info`` matrix of every pair (``gt.info``'s ``(i, j)`` = (target, source) fragment ids)."""
        lookup = {(name, int(i), int(j)): s.information[k] for name, s in scenes.items()
                  for k, (i, j) in enumerate(s.pairs)}
        out = np.zeros((len(pairs), 6, 6))
        for k, key in enumerate(zip(pairs.scene, pairs.target_id.tolist(), pairs.source_id.tolist())):
            if key not in lookup:
                raise DatasetFileError(f"{metadata}: pair {k} ({key[0]}, fragments {key[1]}-{key[2]}) is not in the "
                                       f"benchmark's gt.info")
            out[k] = lookup[key]
        return out

    # --- Lightning -----------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch what is missing (with ``download``) and build the caches of the splits whose metadata is present."""
        for split in ("train", "val", "test"):
            try:
                self.metadata_path(split)
            except DatasetNotFoundError:
                if split == "test":
                    raise
                continue
            self.dataset(split)

    def dataset(self, split: str) -> FragmentPairDataset:
        """The pairs of ``train``, ``val`` or ``test`` (the ``benchmark``) with their rotation protocol."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
        if split not in self._datasets:
            self._datasets[split] = self._split_dataset(split)
        return self._datasets[split]


"""Fragment registration: a registered registration network (RoITr) trained with its circle and optimal-transport
losses, evaluated with the 3DMatch metrics, and an estimator that turns its correspondences into a pose.

One pair per step (RoITr trains with batch size 1): a batch of ``FragmentPair`` samples
(:mod:`pointgeo.datamodules.threedmatch`) must hold exactly one pair. Logged per stage: ``{stage}/loss``,
``{stage}/circle_loss``, ``{stage}/ot_loss``; in validation and test also ``{stage}/ir`` (inlier ratio), ``/fmr``,
``/rr`` (registration recall, the mean-distance definition: ``mean_p ‖T̂ p − T* p‖ < 0.2``), ``/rre`` and ``/rte``
(on the accepted pairs), and ``/rr_information`` where the batch carries ``gt.info`` matrices
(:mod:`pointgeo.metrics.registration`). ``num_scenes > 1`` averages per scene first, as the benchmark does.

Estimators (``estimator``): ``"lgr"``, the deterministic local-to-global estimator on the fine correspondences
(:func:`pointgeo.geometry.lgr.local_to_global_registration`, equivariant), or ``"ransac"``, Open3D's seeded RANSAC on
up to ``ransac_correspondences`` correspondences sampled by confidence
(:func:`pointgeo.geometry.registration.ransac_on_correspondences`; RoITr's reported estimator).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from pointgeo.geometry.lgr import local_to_global_registration
from pointgeo.geometry.registration import MIN_INLIERS, RegistrationResult, ransac_on_correspondences
from pointgeo.metrics.registration import (
    FeatureMatchingRecall,
    InlierRatio,
    RegistrationRecall,
    RelativeRotationError,
    RelativeTranslationError,
)
from pointgeo.nn.roitr import check_fragment
from pointgeo.nn.roitr.losses import optimal_transport_loss, overlap_aware_circle_loss, point_match_labels
from pointgeo.registry import create_model, get_model_entry
from pointgeo.tasks.base import OptimizerName, PointGeoTask, SchedulerName

Estimator = Literal["lgr", "ransac"]


class RegistrationTask(PointGeoTask):
    """Train and evaluate a registered registration network (module docstring).

    Args:
        network: registry name of the network (``roitr``).
        network_kwargs: its constructor arguments (widths, radii in the data's unit).
        estimator: ``lgr`` or ``ransac``.
        circle_weight, ot_weight: loss weights (RoITr: 1 and 1).
        positive_radius: radius of the ground-truth point matches of the OT loss (RoITr 0.05 m).
        inlier_threshold: τ₁ of the inlier ratio (0.1 m on 3DMatch).
        estimator_distance: inlier distance of LGR's votes and RANSAC's checks (LGR 0.1 m, RoITr's RANSAC 0.05 m).
        min_inliers: fewest inliers of an accepted estimate (fewer: ``success=False``).
        ransac_correspondences, ransac_iterations, seed: RANSAC's sample of correspondences (by confidence,
            seeded), its iterations and Open3D's seed.
        num_scenes: scenes of the evaluated split (1: plain mean over pairs; 8 for the benchmark).
        optimizer, lr, weight_decay, momentum, scheduler, min_lr, step_size, gamma: as in
            :class:`~pointgeo.tasks.base.PointGeoTask` (RoITr: Adam 1e-4, weight decay 1e-6, × 0.95 per epoch).
    """

    task_kind = "registration"
    test_metric = "test/rr"
    test_rotations = ("none", "haar")
    """Protocols ``pointgeo train`` tests the best checkpoint under: the original pairs and the rotated benchmark
    (one Haar rotation per pair on one cloud)."""
    test_columns = (("test/ir", "IR", 100.0, "%"), ("test/fmr", "FMR", 100.0, "%"), ("test/rr", "RR", 100.0, "%"),
                    ("test/rre", "RRE", 1.0, "deg"), ("test/rte", "RTE", 1.0, "m"))

    def __init__(
        self,
        network: str = "roitr",
        network_kwargs: dict[str, Any] | None = None,
        estimator: Estimator = "lgr",
        circle_weight: float = 1.0,
        ot_weight: float = 1.0,
        positive_radius: float = 0.05,
        inlier_threshold: float = 0.1,
        estimator_distance: float = 0.1,
        min_inliers: int = MIN_INLIERS,
        ransac_correspondences: int = 5000,
        ransac_iterations: int = 50_000,
        seed: int = 0,
        num_scenes: int = 1,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-4,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        scheduler: SchedulerName = "step",
        min_lr: float = 0.0,
        step_size: int = 1,
        gamma: float = 0.95,
    ) -> None:
        super().__init__()
        entry = get_model_entry(network)
        if entry.task != "registration":
            raise ValueError(f"network {network!r} is a {entry.task} network, not a registration one")
        if estimator not in ("lgr", "ransac"):
            raise ValueError(f"estimator must be 'lgr' or 'ransac'; got {estimator!r}")
        self.save_hyperparameters()
        self.net = create_model(network, **(network_kwargs or {}))
        # compute_groups=False in every collection: IR and FMR (RR, RRE and RTE) share a base class and state names,
        # and torchmetrics merges metrics whose states agree after the first update (a first pair without inliers)
        # into one group, after which IR reported FMR's value
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_metrics": MetricCollection({
                "ir": InlierRatio(num_scenes, inlier_threshold),
                "fmr": FeatureMatchingRecall(num_scenes, inlier_threshold),
            }, prefix=f"{stage}/", compute_groups=False) for stage in ("val", "test")
        })
        self.pose_metrics = torch.nn.ModuleDict({
            f"{stage}_metrics": MetricCollection({
                "rr": RegistrationRecall("mean_distance", num_scenes),
                "rre": RelativeRotationError("mean_distance", num_scenes),
                "rte": RelativeTranslationError("mean_distance", num_scenes),
            }, prefix=f"{stage}/", compute_groups=False) for stage in ("val", "test")
        })
        self.information_metrics = torch.nn.ModuleDict({
            f"{stage}_metrics": MetricCollection({"rr_information": RegistrationRecall("information", num_scenes)},
                                                 prefix=f"{stage}/", compute_groups=False) for stage in ("val", "test")
        })

    @staticmethod
    def single_pair(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(src_pos (N, 3), tgt_pos (M, 3), transform (4, 4) | None)`` of a one-pair batch."""
        count = int(batch.transform.shape[0]) if getattr(batch, "transform", None) is not None else \
            int(getattr(batch, "num_graphs", 1))
        if count != 1:
            raise ValueError(f"RegistrationTask runs one fragment pair per step (RoITr trains with batch size 1); "
                             f"got a batch of {count} pairs: set data.batch_size to 1")
        transform = batch.transform[0] if getattr(batch, "transform", None) is not None else None
        return batch.src_pos, batch.tgt_pos, transform

    def forward(self, src_pos: Tensor, tgt_pos: Tensor, transform: Tensor | None = None):
        return self.net(src_pos, tgt_pos, transform)

    def losses(self, out: Any, src_pos: Tensor, tgt_pos: Tensor, transform: Tensor) -> dict[str, Tensor]:
        """``{"circle_loss", "ot_loss", "loss"}`` of a forward run with the ground truth ``transform``."""
        src_valid, tgt_valid = out.src_patches.mask.any(1), out.tgt_patches.mask.any(1)
        circle = overlap_aware_circle_loss(out.src_superpoint_desc, out.tgt_superpoint_desc, out.overlap,
                                           src_valid, tgt_valid, positive_overlap=self.net.coarse_overlap)
        pairs = out.coarse_pairs
        labels = point_match_labels(src_pos, tgt_pos, transform, out.src_patches.index[pairs[:, 0]],
                                    out.tgt_patches.index[pairs[:, 1]], out.src_patches.mask[pairs[:, 0]],
                                    out.tgt_patches.mask[pairs[:, 1]], self.hparams.positive_radius)
        ot = optimal_transport_loss(out.log_assignment, labels)
        loss = self.hparams.circle_weight * circle + self.hparams.ot_weight * ot
        return {"circle_loss": circle, "ot_loss": ot, "loss": loss}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        src, tgt, transform = self.single_pair(batch)
        if transform is None:
            raise ValueError("training needs the pair's ground-truth 'transform'")
        out = self(src, tgt, transform)
        losses = self.losses(out, src, tgt, transform)
        for key, value in losses.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=1)
        return losses["loss"]

    def estimate(self, src_pos: Tensor, tgt_pos: Tensor, out: Any) -> RegistrationResult:
        """The pose from a forward's correspondences with the configured estimator."""
        hp = self.hparams
        if hp.estimator == "lgr":
            return local_to_global_registration(src_pos, tgt_pos, out.correspondences, out.scores, out.groups,
                                                distance=hp.estimator_distance, min_inliers=hp.min_inliers)
        corr, scores = out.correspondences.cpu(), out.scores.detach().double().cpu()
        if len(corr) > hp.ransac_correspondences:
            gen = torch.Generator().manual_seed(hp.seed)
            corr = corr[torch.multinomial(scores, hp.ransac_correspondences, replacement=False, generator=gen)]
        return ransac_on_correspondences(src_pos.detach().cpu(), tgt_pos.detach().cpu(), corr,
                                         distance=hp.estimator_distance, seed=hp.seed,
                                         max_iterations=hp.ransac_iterations, min_inliers=hp.min_inliers)

    def _evaluate(self, batch: Any, stage: str) -> None:
        src, tgt, transform = self.single_pair(batch)
        out = self(src, tgt, transform)
        if transform is not None:
            for key, value in self.losses(out, src, tgt, transform).items():
                self.log(f"{stage}/{key}", value, prog_bar=key == "loss", batch_size=1)
        if transform is None:
            return
        truth = transform[None].double()
        scene = batch.scene if self.hparams.num_scenes > 1 and hasattr(batch, "scene") else None
        corr = out.correspondences
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(src[corr[:, 0]][None], tgt[corr[:, 1]][None], truth, scene=scene)
        self.log_dict(metrics, prog_bar=stage == "val", on_step=False, on_epoch=True, batch_size=1)
        result = self.estimate(src, tgt, out)
        estimate = result.transform.to(truth)[None]
        pose = self.pose_metrics[f"{stage}_metrics"]
        pose.update(estimate, truth, scene, source_points=src[None])
        self.log_dict(pose, on_step=False, on_epoch=True, batch_size=1)
        if getattr(batch, "information", None) is not None:
            info = self.information_metrics[f"{stage}_metrics"]
            info.update(estimate, truth, scene, information=batch.information.double(), source_id=batch.src_id,
                        target_id=batch.tgt_id)
            self.log_dict(info, on_step=False, on_epoch=True, batch_size=1)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        src, tgt, _ = self.single_pair(batch)
        result = self.register_pair(src, tgt)
        return {"index": batch.index, "transform": result.transform, "success": result.success,
                "correspondences": result.correspondences, "inliers": result.inliers}

    def register_pair(self, src_pos: Tensor, tgt_pos: Tensor) -> RegistrationResult:
        """Register ``src_pos (N, 3)`` to ``tgt_pos (M, 3)`` (any float dtype; cast to the network's dtype and
        device) in eval mode without gradients, with the configured estimator.

        Returns:
            The :class:`~pointgeo.geometry.registration.RegistrationResult`: ``transform (4, 4)`` float64 mapping
            the source into the target (``x Rᵀ + t``; identity with ``success=False`` and the reason when no
            consistent motion is found), ``correspondences (K, 2)`` indexing the given clouds (source row,
            target row), inliers within ``estimator_distance`` and their ratio.

        Raises:
            TypeError / ValueError: clouds that are not float ``(N, 3)`` tensors, empty, NaN/inf, or smaller than
                the network's neighbourhoods need.
        """
        was_training = self.training
        self.eval()
        try:
            param = next(self.net.parameters())
            src = check_fragment(src_pos, "src_pos").to(param.device, param.dtype)
            tgt = check_fragment(tgt_pos, "tgt_pos").to(param.device, param.dtype)
            with torch.no_grad():
                out = self.net(src, tgt)
                return self.estimate(src, tgt, out)
        finally:
            self.train(was_training)

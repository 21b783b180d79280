"""RoITr (Yu et al., CVPR 2023) for fragment registration: PPF coordinates and attention (:mod:`.ppf`), the
encoder–decoder (:mod:`.backbone`), the global transformer (:mod:`.transformer`), coarse-to-fine matching
(:mod:`.matching`), ground truth and losses (:mod:`.losses`), the assembled network (:mod:`.network`, registered
as ``"roitr"``)."""

from pointgeo.nn.roitr.network import PAIR_OUTPUT_KINDS, RoITr, RoITrOutput, check_fragment, roitr

__all__ = ["PAIR_OUTPUT_KINDS", "RoITr", "RoITrOutput", "check_fragment", "roitr"]

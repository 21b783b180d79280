"""How well a predicted partition fits the true parts: its accuracy as a refinement.

APEN predicts parts without names; what its guarantee needs is that every predicted part lies inside one true part
(the prediction *refines* the truth, so a rigid motion of each true part moves every predicted part rigidly). The
**partition accuracy** of a shape is the fraction of its points whose predicted part's majority true label is their
own (purity): 1 exactly when the prediction refines the truth, whatever the predicted labels are called. A
partition into single points scores 1 too, so report it with the number of predicted parts.
"""

from __future__ import annotations

import torch
from torch import Tensor


def partition_accuracy(pred: Tensor, target: Tensor) -> Tensor:
    """Per-shape partition accuracy (module docstring) of predicted parts ``pred (B, N)`` against true labels
    ``target (B, N)`` (non-negative integers, any ids): ``(B,)`` float64.

    Example: target ``0 0 0 1 1``, pred ``5 5 7 7 7``: part 5 is all 0 (2 points), part 7 holds ``0 1 1`` (majority
    1: 2 points), so 4 / 5 = 0.8.
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.is_floating_point() or target.is_floating_point():
        raise ValueError(f"pred and target must be integer labels (B, N) of one shape; got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    if pred.numel() and (int(pred.min()) < 0 or int(target.min()) < 0):
        raise ValueError("partition labels must be non-negative")
    b, n = pred.shape
    kp, kt = int(pred.max()) + 1, int(target.max()) + 1
    cells = (torch.arange(b, device=pred.device)[:, None] * kp + pred) * kt + target  # (B, N)
    counts = torch.bincount(cells.flatten(), minlength=b * kp * kt).reshape(b, kp, kt)
    return counts.amax(-1).sum(-1).double() / n

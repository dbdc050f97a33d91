"""Losses that ignore unannotated voxels (label 255) and the consistency / distance terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from training import IGNORE_INDEX

_dice = DiceLoss(include_background=False, softmax=False, batch=True)


def valid_mask(labels: torch.Tensor) -> torch.Tensor:
    """Float mask (N, 1, ...) of annotated voxels."""
    return (labels != IGNORE_INDEX).unsqueeze(1).float()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, ...) integer labels -> (N, C, ...) one-hot; 255 voxels become all-zero."""
    clean = torch.where(labels == IGNORE_INDEX, torch.zeros_like(labels), labels).long()
    oh = F.one_hot(clean, num_classes).movedim(-1, 1).float()
    return oh * valid_mask(labels)


def masked_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MONAI Dice loss over annotated voxels only (predictions at 255 voxels are zeroed).

    With nothing annotated both sides are all zero and MONAI's smoothing makes the loss 0
    with a zero gradient, so no branch on the data is needed: a branch would read the GPU's
    result back every step and stop the step from being captured as a CUDA graph.
    """
    mask = valid_mask(labels)
    probs = torch.softmax(logits, dim=1) * mask
    return _dice(probs, one_hot(labels, logits.shape[1]))


def masked_ce_loss(logits: torch.Tensor, labels: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy ignoring 255; zero (with gradient graph) when nothing is annotated.

    The mean over annotated voxels is taken as a sum over a clamped count, which is 0 rather
    than NaN when nothing is annotated, without reading the count back to the CPU.
    """
    total = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return weight * total / count


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0.5 * (CE + Dice), both restricted to annotated voxels."""
    return 0.5 * (masked_ce_loss(logits, labels) + masked_dice_loss(logits, labels))


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-voxel squared difference of softmax outputs, shape (N, C, ...)."""
    return (torch.softmax(student_logits, 1) - torch.softmax(teacher_logits, 1).detach()) ** 2


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(-5 (1 - t)^2) ramp from 0 to 1 over ``rampup_steps`` (Laine & Aila)."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step, 0), rampup_steps) / rampup_steps
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))


def sdf_to_probability(sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """Smooth Heaviside of the negated SDF (inside < 0): foreground probability per class."""
    return torch.sigmoid(-k * sdf)


def edge_loss(edge_logits: torch.Tensor, edges: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE on boundary maps, over ``valid`` voxels only."""
    n_valid = valid.sum()
    if n_valid == 0:
        return edge_logits.sum() * 0.0
    pos = (edges * valid).sum()
    pos_weight = ((n_valid - pos) / pos.clamp(min=1.0)).clamp(max=50.0)
    loss = F.binary_cross_entropy_with_logits(
        edge_logits, edges, pos_weight=pos_weight, reduction="none"
    )
    return (loss * valid).sum() / n_valid

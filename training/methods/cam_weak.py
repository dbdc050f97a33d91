"""cam_weak: learn segmentation from CAM-derived weak masks with teacher-student refinement.

After the consistency label transfer idea (weakly supervised lesion segmentation from image-level
labels): weak masks are noisy, so after a warm-up on them an EMA teacher regenerates the
pseudo-labels of every weak voxel. Voxels where the teacher is confident take its label;
uncertain ones are ignored (255). Trusted labels (the user's dense or sparse voxels, and empty
masks of slices tagged negative) are never overruled. Unlabelled slices get the mean-teacher
consistency term, as in :mod:`training.methods.mean_teacher`.

Label encoding in a batch (see :mod:`training.weak.weak_masks`): 0..C-1 trusted, ``WEAK_BASE + c``
weak, 255 not annotated.
"""

from __future__ import annotations

import torch

from training import IGNORE_INDEX, WEAK_BASE
from training.engine.losses import softmax_mse, supervised_loss
from training.methods.base import Batch
from training.methods.mean_teacher import MeanTeacher


def split_weak(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels with weak classes decoded to 0..C-1, boolean mask of weak voxels)."""
    weak = (labels >= WEAK_BASE) & (labels != IGNORE_INDEX)
    return torch.where(weak, labels - WEAK_BASE, labels), weak


def teacher_agreement(labels: torch.Tensor, teacher_probs: torch.Tensor) -> float:
    """Dice (0..1) between the teacher's structures and the weak masks' structures, over the
    batch's weak voxels; 1.0 when the batch has no weak structure to agree on."""
    decoded, weak = split_weak(labels)
    mask_fg = weak & (decoded > 0)
    teacher_fg = weak & (teacher_probs.argmax(dim=1) > 0)
    total = int(mask_fg.sum()) + int(teacher_fg.sum())
    if int(mask_fg.sum()) == 0:
        return 1.0
    return 2.0 * int((mask_fg & teacher_fg & (teacher_probs.argmax(1) == decoded)).sum()) / total


def pseudo_labels(
    labels: torch.Tensor, teacher_probs: torch.Tensor, threshold: float = 0.8,
    min_agreement: float = 0.0,
) -> torch.Tensor:
    """Training target: trusted voxels as given; weak voxels take the teacher's label where its
    top probability is at least ``threshold`` and become 255 (ignored) where it is not.

    While the teacher agrees with the weak masks less than ``min_agreement``
    (:func:`teacher_agreement`), the weak masks themselves stay the target: a teacher that has
    not learnt them yet is confident only of background, and relabelling by it erased every
    weak structure and collapsed the network (LGG, at the end of the warm-up, twice)."""
    decoded, weak = split_weak(labels)
    if min_agreement > 0 and teacher_agreement(labels, teacher_probs) < min_agreement:
        return decoded
    conf, arg = teacher_probs.max(dim=1)
    regenerated = torch.where(conf >= threshold, arg.to(labels.dtype),
                              torch.full_like(labels, IGNORE_INDEX))
    return torch.where(weak, regenerated, decoded)


class CamWeak(MeanTeacher):
    """Warm-up on the weak masks, then EMA-teacher pseudo-labels on weak voxels."""

    name = "cam_weak"
    # its own schedule, chosen on LGG val, not the mean teacher's
    default_rampup = 0.4
    default_warmup = 0.3
    options = {
        "confidence": (0.8, "teacher probability needed to relabel a weak voxel (else ignored)"),
        "agreement": (0.5, "Dice between the teacher and the weak masks needed before it "
                           "relabels them (below it the masks stay the target)"),
        "localiser": ("anomaly", "what seeded the weak masks (recorded by train --tags)"),
    }

    def step(self, labeled: Batch, unlabeled: Batch | None, step: int, total_steps: int) -> dict:
        # every slice may carry a tag, so there may be no unlabelled pool: the teacher refinement
        # must still run (the base class would stay in warm-up without unlabelled data)
        if unlabeled is None:
            unlabeled = {"image": labeled["image"][:0]}
        return super().step(labeled, unlabeled, step, total_steps)

    def warmup_losses(self, labeled: Batch) -> dict[str, torch.Tensor]:
        decoded, _ = split_weak(labeled["label"])
        out = self.main()(labeled["image"])
        return {"sup": supervised_loss(out["logits"], decoded)}

    def losses(self, labeled: Batch, unlabeled: Batch, step: int, total: int) -> dict:
        xl, xu = labeled["image"], unlabeled["image"]
        with torch.no_grad():
            self.teacher.eval()
            t_lab = torch.softmax(self.teacher(xl)["logits"], 1)
        target = pseudo_labels(labeled["label"], t_lab, self.opt("confidence"),
                               self.opt("agreement"))
        out = self.main()(torch.cat([xl, xu]))["logits"]
        sup = supervised_loss(out[: len(xl)], target)
        if len(xu) == 0:
            return {"sup": sup}
        cons = softmax_mse(out[len(xl):], self.teacher_logits(xu)).mean()
        return {"sup": sup, "cons": self.consistency * self.ramp(step, total) * cons}

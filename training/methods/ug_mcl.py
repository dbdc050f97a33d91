"""Uncertainty-guided mutual consistency learning (Zhang et al. 2022).

One dual-task network (segmentation + SDF) and its EMA teacher. Intra-task consistency (student vs
MC-dropout teacher, for both tasks) is masked by the teacher's uncertainty; cross-task consistency
ties the student's SDF (through a smooth Heaviside) to its own segmentation.
"""

from __future__ import annotations

import torch

from training.engine.losses import sdf_to_probability, supervised_loss, valid_mask
from training.engine.sdf import batch_signed_distance
from training.methods.base import Batch, perturb
from training.methods.dtml import masked_mse
from training.methods.ua_mt import UAMT, certainty_mask, mc_teacher, uncertainty_threshold


class UGMCL(UAMT):
    options = {
        **UAMT.options,
        "heaviside_k": (1500.0, "steepness of the sigmoid that turns the signed distance into a "
                                "mask"),
    }
    name = "ug_mcl"
    # not re-chosen for the papers' mean-teacher schedule yet: the earlier defaults
    default_warmup = 0.0
    default_rampup = 0.4

    def build(self, model_config: dict) -> None:
        super().build({**model_config, "sdf_head": True})

    def _sup(self, out: dict, yl: torch.Tensor, n: int) -> dict:
        gt_sdf = batch_signed_distance(yl, self.num_classes)
        return {
            "sup": supervised_loss(out["logits"][:n], yl),
            "sdf": masked_mse(out["sdf"][:n], gt_sdf, valid_mask(yl)),
        }

    def warmup_losses(self, labeled: Batch) -> dict:
        return self._sup(self.main()(labeled["image"]), labeled["label"], len(labeled["image"]))

    def losses(self, labeled: Batch, unlabeled: Batch, step: int, total: int) -> dict:
        xl, xu = labeled["image"], unlabeled["image"]
        n = len(xl)
        out = self.main()(torch.cat([xl, perturb(xu)]))
        terms = self._sup(out, labeled["label"], n)
        probs, unc, extras = mc_teacher(self.teacher, xu, self.opt("mc_passes"))
        warm = self.warmup_steps(total)
        thr = uncertainty_threshold(step - warm, max(total - warm, 1), self.num_classes)
        mask = certainty_mask(unc, thr).unsqueeze(1)
        intra = masked_mse(torch.softmax(out["logits"][n:], 1), probs, mask)
        intra = intra + masked_mse(out["sdf"][n:], extras["sdf"], mask)
        k = self.opt("heaviside_k")
        cross = ((sdf_to_probability(out["sdf"], k) - torch.softmax(out["logits"], 1)[:, 1:]) ** 2)
        w = self.consistency * self.ramp(step, total)
        terms["intra"] = w * intra
        terms["cross"] = w * cross.mean()
        return terms

"""Dual-task mutual learning (Zhang et al. 2021).

Two networks: one predicts segmentation, the other a signed distance map (SDF). On every image
(labelled or not) each learns from the other: the SDF becomes a foreground probability through a
smooth Heaviside and is matched to the segmentation softmax, in both directions.
"""

from __future__ import annotations

import torch

from training.engine.losses import sdf_to_probability, supervised_loss, valid_mask
from training.engine.networks import build_network
from training.engine.sdf import batch_signed_distance
from training.methods.base import Batch, Method


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over voxels where ``mask`` (broadcastable) is 1."""
    mask = mask.expand_as(a)
    return ((a - b) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class DTML(Method):
    options = {"heaviside_k": (1500.0, "steepness of the sigmoid that turns the signed distance "
                                       "into a mask")}
    name = "dtml"

    def build(self, model_config: dict) -> None:
        self.nets["student"] = build_network({**model_config, "sdf_head": False})
        self.nets["sdf_net"] = build_network({**model_config, "sdf_head": True})
        self.model_config = {**model_config, "sdf_head": False}

    def losses(self, labeled: Batch, unlabeled: Batch, step: int, total: int) -> dict:
        xl, yl = labeled["image"], labeled["label"]
        x = torch.cat([xl, unlabeled["image"]])
        n = len(xl)
        seg = self.nets["student"](x)["logits"]
        sdf = self.nets["sdf_net"](x)["sdf"]
        k = self.opt("heaviside_k")
        sup = supervised_loss(seg[:n], yl)
        gt_sdf = batch_signed_distance(yl, self.num_classes)
        sdf_sup = masked_mse(sdf[:n], gt_sdf, valid_mask(yl))
        sdf_prob = sdf_to_probability(sdf, k)
        sup_from_sdf = masked_mse(sdf_prob[:n], (gt_sdf < 0).float(), valid_mask(yl))
        seg_fg = torch.softmax(seg, 1)[:, 1:]
        mutual = ((seg_fg - sdf_prob.detach()) ** 2).mean()
        mutual = mutual + ((sdf_prob - seg_fg.detach()) ** 2).mean()
        return {
            "sup": sup,
            "sdf": sdf_sup + sup_from_sdf,
            "mutual": self.consistency * self.ramp(step, total) * mutual,
        }

    def warmup_losses(self, labeled: Batch) -> dict:
        xl, yl = labeled["image"], labeled["label"]
        sup = supervised_loss(self.nets["student"](xl)["logits"], yl)
        sdf = self.nets["sdf_net"](xl)["sdf"]
        gt_sdf = batch_signed_distance(yl, self.num_classes)
        return {"sup": sup, "sdf": masked_mse(sdf, gt_sdf, valid_mask(yl))}

"""Uncertainty-aware mean teacher (Yu et al. 2019).

The teacher runs ``mc_passes`` noisy MC-dropout passes; the consistency loss only counts voxels
whose predictive entropy is below a threshold that ramps from 0.75 to 1.0 of ln(C).
"""

from __future__ import annotations

import math

import torch

from training.engine.losses import sigmoid_rampup, softmax_mse, supervised_loss
from training.engine.networks import enable_mc_dropout
from training.methods.base import Batch, perturb
from training.methods.mean_teacher import MeanTeacher


def entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Shannon entropy (nats) along ``dim``."""
    return -(probs * torch.log(probs.clamp_min(1e-8))).sum(dim=dim)


def uncertainty_threshold(step: int, rampup_steps: int, num_classes: int) -> float:
    """(0.75 + 0.25 * ramp(step)) * ln(C): the UA-MT schedule."""
    return (0.75 + 0.25 * sigmoid_rampup(step, rampup_steps)) * math.log(num_classes)


def certainty_mask(uncertainty: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 where the teacher is certain enough to be trusted, else 0."""
    return (uncertainty < threshold).float()


@torch.no_grad()
def mc_teacher(
    teacher: torch.nn.Module, x: torch.Tensor, passes: int, key: str = "logits"
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mean softmax over ``passes`` noisy MC-dropout passes, its entropy, and mean extra heads."""
    teacher.eval()
    enable_mc_dropout(teacher, True)
    probs = 0.0
    extras: dict[str, torch.Tensor] = {}
    for _ in range(passes):
        out = teacher(perturb(x))
        probs = probs + torch.softmax(out[key], 1) / passes
        for k in ("sdf",):
            if k in out:
                extras[k] = extras.get(k, 0.0) + out[k] / passes
    enable_mc_dropout(teacher, False)
    return probs, entropy(probs), extras


class UAMT(MeanTeacher):
    options = {
        "dropout": (0.1, "dropout of the networks (at least), for the teacher's MC passes"),
        "mc_passes": (4, "teacher passes with dropout per step, for the uncertainty"),
    }
    name = "ua_mt"

    def build(self, model_config: dict) -> None:
        cfg = dict(model_config)
        cfg["dropout"] = max(float(cfg.get("dropout", 0.0)), self.opt("dropout"))
        self.model_config = cfg
        super().build(cfg)

    def losses(self, labeled: Batch, unlabeled: Batch, step: int, total: int) -> dict:
        xl, xu = labeled["image"], unlabeled["image"]
        out = self.main()(torch.cat([xl, perturb(xu)]))["logits"]
        sup = supervised_loss(out[: len(xl)], labeled["label"])
        probs, unc, _ = mc_teacher(self.teacher, xu, self.opt("mc_passes"))
        warm = self.warmup_steps(total)
        thr = uncertainty_threshold(step - warm, max(total - warm, 1), self.num_classes)
        mask = certainty_mask(unc, thr).unsqueeze(1)
        dist = (torch.softmax(out[len(xl):], 1) - probs) ** 2
        cons = (mask * dist).sum() / (mask.sum() * dist.shape[1] + 1e-8)
        return {"sup": sup, "cons": self.consistency * self.ramp(step, total) * cons}


__all__ = ["UAMT", "entropy", "uncertainty_threshold", "certainty_mask", "softmax_mse"]

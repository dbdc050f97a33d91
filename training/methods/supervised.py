"""Labelled voxels only: CE + Dice ignoring 255; unlabelled data is not used."""

from __future__ import annotations

from training.methods.base import Batch, Method


class Supervised(Method):
    name = "supervised"

    def losses(self, labeled: Batch, unlabeled: Batch, step: int, total: int) -> dict:
        return self.warmup_losses(labeled)

"""Signed distance maps of label maps (negative inside, positive outside, normalised to [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from training import IGNORE_INDEX


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Normalised signed distance of one binary mask (any dimensionality).

    Inside voxels get -d_in / max(d_in), outside voxels +d_out / max(d_out), boundary voxels 0.
    An empty or full mask gives all zeros (no boundary to measure from).
    """
    mask = mask.astype(bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape, dtype=np.float32)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    boundary = mask & ~ndimage.binary_erosion(mask, border_value=1)
    out = outside / outside.max() - inside / inside.max()
    out[boundary] = 0.0
    return out.astype(np.float32)


def batch_signed_distance(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, ...) labels -> (N, C-1, ...) per-foreground-class SDF, computed per sample.

    Unannotated voxels (255) are treated as outside; use :func:`training.engine.losses.valid_mask`
    to
    exclude them from any SDF loss.
    """
    arr = labels.detach().cpu().numpy()
    out = np.zeros((arr.shape[0], max(num_classes - 1, 1), *arr.shape[1:]), dtype=np.float32)
    for n in range(arr.shape[0]):
        for c in range(1, num_classes):
            out[n, c - 1] = signed_distance((arr[n] == c) & (arr[n] != IGNORE_INDEX))
    return torch.from_numpy(out).to(labels.device)

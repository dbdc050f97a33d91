"""Bidirectional copy-paste (BCP) masks, mixing and label edges."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training import IGNORE_INDEX


def dynamic_ratio(step: int, total: int, start: float = 2 / 3, end: float = 1 / 3) -> float:
    """Side ratio of the pasted box, moving linearly from ``start`` to ``end`` over training."""
    t = 0.0 if total <= 0 else min(max(step / total, 0.0), 1.0)
    return start + (end - start) * t


def box_mask(
    shape: tuple[int, ...], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Float mask of ``shape`` (spatial only) with one box of side ``ratio * size`` set to 1."""
    mask = torch.zeros(shape)
    slices = []
    for size in shape:
        side = max(1, int(round(size * ratio)))
        start = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        slices.append(slice(start, start + side))
    mask[tuple(slices)] = 1.0
    return mask


def mix(
    inside_img: torch.Tensor,
    outside_img: torch.Tensor,
    inside_lab: torch.Tensor,
    outside_lab: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``inside`` where ``mask`` is 1 onto ``outside``; labels follow the same mask.

    Images are (N, 1, ...), labels (N, ...), mask spatial (...).
    """
    m_img = mask.to(inside_img.device)
    img = inside_img * m_img + outside_img * (1 - m_img)
    m_lab = m_img.bool()
    lab = torch.where(m_lab, inside_lab, outside_lab)
    return img, lab


def label_edges(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary map (N, 1, ...) of a label map and its valid mask (no 255 in the neighbourhood).

    A voxel is an edge when its 3^d neighbourhood holds more than one label value.
    """
    x = labels.unsqueeze(1).float()
    dims = labels.dim() - 1
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    ignore = (x == IGNORE_INDEX).float()
    clean = torch.where(ignore.bool(), torch.zeros_like(x), x)
    hi = pool(clean, 3, stride=1, padding=1)
    lo = -pool(-clean, 3, stride=1, padding=1)
    near_ignore = pool(ignore, 3, stride=1, padding=1)
    edges = (hi != lo).float()
    return edges, 1.0 - near_ignore

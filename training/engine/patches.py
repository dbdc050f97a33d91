"""2-D training batches as patches of the native pixel grid (the default recipe).

Slices are never squashed to a square: each batch takes ``size`` patches at the scan's own
pixel size, a share of them centred on a labelled structure voxel (nnU-Net forces a third onto
foreground), and augments them in one batched call (:mod:`training.engine.augment`). Slices smaller
than the patch are padded; what lies outside a slice is "not annotated" (255).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training import IGNORE_INDEX
from training.engine.augment import (
    Augmentation,
    intensity,
    missing_channels,
    patch_grid,
    sample_patches,
)
from training.engine.data import DataError, SlicePicker, TrainData

FOREGROUND_SHARE = 1 / 3


class _Stack:
    """Slices of varying sizes padded into one (N, H, W) tensor, or (N, C, H, W) for slices
    with channels, with each slice's own size."""

    def __init__(self, slices: list[np.ndarray], fill: float, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        self.hw = torch.tensor([s.shape[-2:] for s in slices], dtype=torch.long).reshape(-1, 2)
        h, w = (int(v) for v in self.hw.max(0).values) if len(slices) else (1, 1)
        lead = tuple(slices[0].shape[:-2]) if len(slices) else ()
        data = torch.full((len(slices), *lead, h, w), fill, dtype=dtype)
        for i, s in enumerate(slices):
            data[i, ..., : s.shape[-2], : s.shape[-1]] = torch.from_numpy(np.ascontiguousarray(s))
        self.data = data.to(device)

    def __len__(self) -> int:
        return len(self.data)


def _slices(volumes: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [s for v in volumes for s in v]


def fitted_patch(size: Sequence[int], data: TrainData, divisor: int) -> list[int]:
    """``size``, shrunk on each axis to the largest slice (rounded up to a multiple of
    ``divisor``, what the network's poolings need): a 64-pixel scan trained in 128-pixel
    patches would spend three quarters of every step on padding."""
    shapes = [v.shape[-2:] for v in (*data.images, *data.unlabeled)]
    largest = [max(s[k] for s in shapes) for k in range(2)]
    return [min(int(p), -(-int(n) // divisor) * divisor) for p, n in zip(size, largest,
                                                                       strict=True)]


class SliceSampler(SlicePicker):
    """Labelled and unlabelled 2-D patch batches from :class:`TrainData`.

    Partly annotated volumes give their annotated slices to the labelled pool and the rest to
    the unlabelled pool (a slice with no annotated voxel is unlabelled, not background).
    Scans with channels (``data.channels`` > 1) give (C, H, W) slices, cut and turned as one.
    """

    def __init__(
        self,
        data: TrainData,
        size: Sequence[int],
        labeled_bs: int = 8,
        unlabeled_bs: int = 8,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        foreground_share: float = FOREGROUND_SHARE,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(size) != 2 or min(int(s) for s in size) < 8:
            raise DataError(f"a 2-D patch needs two sizes of at least 8 pixels, got {list(size)}")
        self.size = (int(size[0]), int(size[1]))
        self.aug = augmentation
        self.foreground_share = float(foreground_share)
        self.scan_channels = data.scan_channels
        lab_s, lab_l, unl_s, counts = [], [], [], []
        for im, lab in zip(data.images, data.labels, strict=True):
            annotated = (lab != IGNORE_INDEX).reshape(len(lab), -1).any(1)
            lab_s += list(im[annotated])
            lab_l += list(lab[annotated])
            unl_s += list(im[~annotated])
            counts.append(int(annotated.sum()))
        unl_s += _slices(data.unlabeled)
        if not lab_s:
            raise DataError("the labelled set is empty: no annotated slice")
        # On a GPU the slices live there and batches are cut and augmented there: a GPU step
        # must not wait for the CPU to make its batch
        self.device = torch.device(device)
        self.lab_img = _Stack(lab_s, 0.0, torch.float32, self.device)
        self.lab_lab = _Stack(lab_l, IGNORE_INDEX, torch.uint8)
        self.unl_img = _Stack(unl_s, 0.0, torch.float32, self.device) if unl_s else None
        self._start_picking(data, counts, self.lab_lab.data, labeled_bs, unlabeled_bs, seed)
        self._index_foreground()
        self.lab_lab.data = self.lab_lab.data.to(self.device)

    def _index_foreground(self) -> None:
        """Flat positions of every structure voxel (1..254), slice by slice, for centring."""
        lab = self.lab_lab.data
        fg = (lab > 0) & (lab != IGNORE_INDEX)
        counts = fg.flatten(1).sum(1)
        self.fg_count = counts
        self.fg_start = torch.cumsum(counts, 0) - counts
        self.fg_flat = torch.nonzero(fg.flatten(1))[:, 1]  # row-major: grouped by slice

    def _centres(self, stack: _Stack, idx: torch.Tensor, foreground: bool) -> torch.Tensor:
        """(N, 2) patch centres (y, x): on a structure voxel for about ``foreground_share`` of
        the labelled slices that have one, else anywhere; the patch kept on the slice where it
        fits (a fitting patch never hangs off the edge)."""
        n = len(idx)
        hw = stack.hw[idx].float()
        half = torch.tensor(self.size, dtype=torch.float32) / 2
        lo = torch.minimum(half, hw / 2)
        hi = torch.maximum(hw - half, hw / 2)
        centres = lo + (hi - lo) * torch.rand(n, 2, generator=self.gen)
        if foreground and self.foreground_share > 0:
            want = (torch.rand(n, generator=self.gen) < self.foreground_share)
            want &= self.fg_count[idx] > 0
            if bool(want.any()):
                sel = idx[want]
                pick = (torch.rand(len(sel), generator=self.gen) * self.fg_count[sel]).long()
                flat = self.fg_flat[self.fg_start[sel] + pick]
                width = stack.data.shape[-1]
                yx = torch.stack([flat // width, flat % width], 1).float()
                centres[want] = torch.minimum(torch.maximum(yx, lo[want]), hi[want])
        # whole-pixel patch starts: an unaugmented patch is the scan's own pixels, unblurred
        size = torch.tensor(self.size, dtype=torch.float32)
        return torch.round(centres - size / 2) + (size - 1) / 2

    def _take(self, images: _Stack, labels: _Stack | None, idx: torch.Tensor) -> dict:
        centres = self._centres(images, idx, foreground=labels is not None)
        grid = patch_grid(centres, tuple(images.data.shape[-2:]), self.size, self.aug,
                          self.gen, self.device)
        at = idx.to(self.device)
        img = images.data[at]
        img = img[:, None] if img.dim() == 3 else img
        lab = labels.data[at] if labels is not None else None
        img, lab = sample_patches(img, lab, grid)
        img = missing_channels(img, self.aug, self.gen, self.scan_channels)
        batch = {"image": intensity(img, self.aug, self.gen)}
        if lab is not None:
            batch["label"] = lab
        return batch

    def next(self) -> tuple[dict, dict | None]:
        """One labelled batch and one unlabelled batch (``None`` when there is no unlabelled)."""
        lab = self._take(self.lab_img, self.lab_lab, self._labelled_indices(self.labeled_bs))
        unl = None
        if self.unl_img is not None and self.unlabeled_bs > 0:
            idx = torch.randint(0, len(self.unl_img), (self.unlabeled_bs,), generator=self.gen)
            unl = self._take(self.unl_img, None, idx)
        return lab, unl

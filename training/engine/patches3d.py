"""3-D training batches on the recipe: foreground-centred patches, turned, scaled and
intensity-augmented as the 2-D ones are (:mod:`training.engine.patches`).

Each patch is read by one ``grid_sample`` call on its volume, so a turn or a scale costs the
patch's voxels, not the volume's. Turns are about the z axis (in the slice plane) by default,
which keeps a scan's orientation; 90-degree turns and mirroring only with ``flips``. What lies
outside a volume is 0 in the image (the normalised mean) and "not annotated" (255) in the labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training import IGNORE_INDEX
from training.engine.augment import Augmentation, intensity
from training.engine.data import DataError, TrainData, rescale_volume
from training.engine.patches import FOREGROUND_SHARE


def patch_grid_3d(
    centre: Sequence[float],
    shape: Sequence[int],
    patch: Sequence[int],
    aug: Augmentation | None,
    gen: torch.Generator,
) -> torch.Tensor:
    """``grid_sample`` grid (1, pd, ph, pw, 3) taking ``patch`` voxels around the (z, y, x)
    ``centre`` of a volume of ``shape``, turned about z and scaled at random when ``aug`` asks.
    Scale 1 and no turn read the volume's own voxels."""
    angle, scale, mirror, turns = 0.0, 1.0, [1.0, 1.0, 1.0], 0
    if aug is not None and float(torch.rand(1, generator=gen)) < aug.p_spatial:
        angle = math.radians(aug.rotate) * (2 * float(torch.rand(1, generator=gen)) - 1)
        lo, hi = aug.scale
        scale = lo + (hi - lo) * float(torch.rand(1, generator=gen))
    if aug is not None and aug.flips:
        turns = int(torch.randint(0, 4, (1,), generator=gen))
        mirror = [-1.0 if float(torch.rand(1, generator=gen)) < 0.5 else 1.0 for _ in range(3)]
    elif aug is not None and aug.mirror_x and float(torch.rand(1, generator=gen)) < 0.5:
        mirror[2] = -1.0
    theta = angle + turns * math.pi / 2
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    # source offset (x, y, z) = M @ patch offset (x, y, z), in voxels
    m = torch.tensor([[c * mirror[2], -s * mirror[1], 0.0],
                      [s * mirror[2], c * mirror[1], 0.0],
                      [0.0, 0.0, scale * mirror[0]]])
    d, h, w = (int(v) for v in shape)
    pd, ph, pw = (int(v) for v in patch)
    # normalised coordinates (align_corners=False): voxel i of n sits at (2i + 1) / n - 1
    mat = torch.zeros(1, 3, 4)
    src = torch.tensor([w, h, d], dtype=torch.float32)
    mat[0, :, :3] = m * torch.tensor([pw, ph, pd], dtype=torch.float32) / src[:, None]
    cz, cy, cx = (float(v) for v in centre)
    mat[0, :, 3] = (2 * torch.tensor([cx, cy, cz]) + 1) / src - 1
    return F.affine_grid(mat, [1, 1, pd, ph, pw], align_corners=False)


class VolumePatchSampler:
    """Labelled and unlabelled 3-D patch batches from :class:`TrainData`.

    About ``foreground_share`` of the labelled patches are centred on a structure voxel (as
    nnU-Net forces a third onto foreground); the others anywhere the patch fits. Partly
    annotated volumes also feed the unlabelled pool, and their random patches are redrawn
    (up to 10 times) until they hold an annotated voxel.
    """

    def __init__(
        self,
        data: TrainData,
        patch: Sequence[int],
        labeled_bs: int = 2,
        unlabeled_bs: int = 2,
        seed: int = 0,
        downsample: float = 1.0,
        augmentation: Augmentation | None = None,
        foreground_share: float = FOREGROUND_SHARE,
    ) -> None:
        if len(patch) != 3 or min(int(p) for p in patch) < 4:
            raise DataError("a 3-D patch needs three sizes of at least 4 voxels, got "
                            f"{list(patch)}")
        self.patch = tuple(int(p) for p in patch)
        self.aug = augmentation
        self.foreground_share = float(foreground_share)
        self.images = [torch.from_numpy(np.ascontiguousarray(
            rescale_volume(v, downsample, False), dtype=np.float32)) for v in data.images]
        self.labels = [torch.from_numpy(rescale_volume(v, downsample, True).astype(np.uint8))
                       for v in data.labels]
        if not self.images:
            raise DataError("the labelled set is empty: no labelled volume")
        # structure voxels (1..254) of each labelled volume, for centring
        self.foreground = [torch.nonzero((lab > 0) & (lab != IGNORE_INDEX)) for lab in self.labels]
        sparse = [im for im, lab in zip(self.images, self.labels, strict=True)
                  if bool((lab == IGNORE_INDEX).any())]
        self.unlabeled = [torch.from_numpy(np.ascontiguousarray(
            rescale_volume(v, downsample, False), dtype=np.float32)) for v in data.unlabeled]
        self.unlabeled += sparse
        self.labeled_bs, self.unlabeled_bs = int(labeled_bs), int(unlabeled_bs)
        self.gen = torch.Generator().manual_seed(seed)

    def _random_centre(self, shape: Sequence[int]) -> list[float]:
        """A centre anywhere the patch fits."""
        return self._fit([float(torch.randint(0, n, (1,), generator=self.gen)) for n in shape],
                         shape)

    def _fit(self, centre: Sequence[float], shape: Sequence[int]) -> list[float]:
        """``centre`` moved so that the patch stays in the volume (centred on an axis it does
        not fit), on whole-voxel starts: an unaugmented patch is the volume's own voxels."""
        out = []
        for c, n, p in zip(centre, shape, self.patch, strict=True):
            start = min(max(round(c - (p - 1) / 2), 0), n - p) if n >= p else -((p - n) // 2)
            out.append(start + (p - 1) / 2)
        return out

    def _read(self, volume: torch.Tensor, label: torch.Tensor | None, centre):
        grid = patch_grid_3d(centre, volume.shape, self.patch, self.aug, self.gen)
        img = F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0]
        if label is None:
            return img, None
        # shifted by one so that zero padding reads as "outside"
        moved = F.grid_sample((label.float() + 1)[None, None], grid, mode="nearest",
                              padding_mode="zeros", align_corners=False)[0, 0].long()
        return img, torch.where(moved == 0, torch.full_like(moved, IGNORE_INDEX), moved - 1)

    def _labelled_patch(self, i: int):
        vol, lab, fg = self.images[i], self.labels[i], self.foreground[i]
        if len(fg) and float(torch.rand(1, generator=self.gen)) < self.foreground_share:
            voxel = fg[int(torch.randint(0, len(fg), (1,), generator=self.gen))]
            return self._read(vol, lab, self._fit([float(v) for v in voxel], vol.shape))
        for _attempt in range(10):
            img, out = self._read(vol, lab, self._random_centre(vol.shape))
            if bool((out != IGNORE_INDEX).any()):
                break
        return img, out

    def next(self) -> tuple[dict, dict | None]:
        """One labelled batch (N, 1, D, H, W) and one unlabelled batch (``None`` without)."""
        imgs, labs = [], []
        for _ in range(self.labeled_bs):
            img, lab = self._labelled_patch(
                int(torch.randint(0, len(self.images), (1,), generator=self.gen)))
            imgs.append(img)
            labs.append(lab)
        batch = {"image": intensity(torch.stack(imgs), self.aug, self.gen),
                 "label": torch.stack(labs)}
        if not self.unlabeled or self.unlabeled_bs <= 0:
            return batch, None
        unl = []
        for _ in range(self.unlabeled_bs):
            vol = self.unlabeled[int(torch.randint(0, len(self.unlabeled), (1,),
                                                   generator=self.gen))]
            unl.append(self._read(vol, None, self._random_centre(vol.shape))[0])
        return batch, {"image": intensity(torch.stack(unl), self.aug, self.gen)}

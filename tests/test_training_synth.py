"""Synthetic data for the training-engine tests (helpers plus a check of the generator)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

TINY = {"kind": "unet", "dims": 2, "in_channels": 1, "num_classes": 3, "base": 4, "depth": 2}


def blob_volume(seed: int, shape=(4, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Raw-intensity volume with a bright disc (class 1) and a dimmer square (class 2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    my, mx = min(8, shape[1] // 2 - 1), min(8, shape[2] // 2 - 1)
    cy, cx = rng.integers(my, shape[1] - my + 1), rng.integers(mx, shape[2] - mx + 1)
    label = np.zeros(shape, np.uint8)
    label[((y - cy) ** 2 + (x - cx) ** 2) < 25] = 1
    sy, sx = rng.integers(2, 6), rng.integers(2, 6)
    label[:, sy : sy + 5, sx : sx + 5] = 2
    image = 100 + 300 * (label == 1) + 150 * (label == 2) + rng.normal(0, 15, shape)
    return image.astype(np.int16), label


def write_dataset(root: Path, n: int = 4, with_index: bool = True, spacing=(0.8, 0.7, 2.5)):
    """Write ``images/`` + ``labels/`` NIfTI files (and an index.csv with a split column)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, lab = blob_volume(i)
        name = f"case{i:02d}"
        for arr, sub in ((img, "images"), (lab, "labels")):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing(spacing)
            im.SetOrigin((10.0, -5.0, 3.0))
            im.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
            sitk.WriteImage(im, str(root / sub / f"{name}.nii.gz"))
        split = "test" if i == n - 1 else "train"
        rows.append({"case": name, "patient": f"p{i // 2}", "image": f"images/{name}.nii.gz",
                     "label": f"labels/{name}.nii.gz", "ssl4mis_split": split})
    if with_index:
        with open(root / "index.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


def set_split(root: Path, case: int, split: str) -> None:
    """Move one case of a :func:`write_dataset` folder to another split of its index.csv."""
    with open(root / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[case]["ssl4mis_split"] = split
    with open(root / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_blob_volume_has_all_classes():
    img, lab = blob_volume(0)
    assert set(np.unique(lab)) == {0, 1, 2}
    assert img[lab == 1].mean() > img[lab == 0].mean() + 200

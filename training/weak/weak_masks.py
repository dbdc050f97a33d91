"""Weak masks from class-activation maps: threshold, clean, and refine on the image.

A CAM says roughly *where* the evidence for a tag is; it is blurry and usually covers only the
most discriminative part of the structure. A weak mask turns it into a label slice:

- :func:`threshold_mask`: peak-normalise, threshold, remove small components (the baseline);
- :func:`refine_mask`: seeds from confident CAM regions (foreground where the CAM is high,
  background where it is low) and scikit-image's random walker on the image decides the rest,
  so the boundary follows intensity edges rather than the CAM's blur;
- :func:`weak_masks`: a whole volume from per-slice tags. Negative slices give empty masks,
  untagged slices stay 255 (not annotated).

Weak labels are marked for :mod:`training.methods.cam_weak` with :func:`encode_weak` (class c is
stored as ``WEAK_BASE + c``) so trusted user labels (0..C-1) and weak ones can share a volume.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects
from skimage.segmentation import random_walker

from training import IGNORE_INDEX, WEAK_BASE
from training.weak.tags import UNTAGGED


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """Scale each 2-D slice of a CAM to a peak of 1 (negative values are clipped)."""
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0, None)
    if cam.ndim == 2:
        return cam / max(float(cam.max()), 1e-8)
    peak = cam.reshape(len(cam), -1).max(axis=1).clip(min=1e-8)
    return cam / peak[:, None, None]


def _clean(mask: np.ndarray, min_size: int) -> np.ndarray:
    mask = mask.astype(bool)
    if min_size > 0 and mask.any():
        mask = remove_small_objects(mask, max_size=min_size - 1) if _NEW_API else \
            remove_small_objects(mask, min_size=min_size)
    return mask


try:  # scikit-image 0.26 renamed min_size -> max_size (objects <= max_size go)
    import inspect

    _NEW_API = "max_size" in inspect.signature(remove_small_objects).parameters
except (TypeError, ValueError):  # pragma: no cover
    _NEW_API = False


def threshold_mask(cam: np.ndarray, threshold: float = 0.5, min_size: int = 20,
                   largest: bool = False) -> np.ndarray:
    """Plain thresholding of one slice's map: ``normalised map >= threshold`` minus small blobs
    (only the largest component with ``largest``)."""
    mask = _clean(normalise_cam(cam) >= threshold, min_size)
    if largest and mask.any():
        comp, n = ndimage.label(mask)
        sizes = ndimage.sum(mask, comp, index=range(1, n + 1))
        mask = comp == 1 + int(np.argmax(sizes))
    return mask


def refine_mask(
    image: np.ndarray,
    cam: np.ndarray,
    fg_threshold: float = 0.7,
    bg_threshold: float = 0.05,
    beta: float = 130.0,
    min_size: int = 20,
    margin: float = 0.12,
) -> np.ndarray:
    """Image-driven weak mask of one slice, seeded from the confident parts of its CAM.

    Foreground seeds: the largest component of ``CAM >= fg_threshold``; background seeds:
    ``CAM <= bg_threshold`` *and* farther than ``margin`` x the slice size from the foreground
    seeds (a CAM often covers only the most telling part of a lesion, so its low values near
    the peak are not evidence of background). The random walker (Grady 2006) labels the rest by
    intensity similarity. ``image`` is any-scaled grey; it is standardised here.
    """
    img = np.asarray(image, dtype=np.float64)
    c = normalise_cam(cam)
    comp, n = ndimage.label(c >= fg_threshold)
    if n == 0:
        return np.zeros(c.shape, dtype=bool)
    sizes = ndimage.sum(np.ones_like(c), comp, index=range(1, n + 1))
    fg = comp == 1 + int(np.argmax(sizes))
    far = ndimage.distance_transform_edt(~fg) > margin * max(c.shape)
    bg = (c <= bg_threshold) & far
    seeds = np.zeros(c.shape, dtype=np.int32)
    seeds[bg] = 1
    seeds[fg] = 2
    if not bg.any():
        return fg
    std = img.std()
    img = (img - img.mean()) / (std if std > 1e-8 else 1.0)
    with warnings.catch_warnings():  # cg_j's loose tolerance trips a harmless range warning
        warnings.simplefilter("ignore", UserWarning)
        labels = random_walker(img, seeds, beta=beta, mode="cg_j", tol=1e-3)
    mask = labels == 2
    # keep only the components that hold a foreground seed: the walker can leak into far blobs
    comp, _ = ndimage.label(mask)
    keep = np.unique(comp[fg & mask])
    return _clean(np.isin(comp, keep[keep > 0]), min_size) | fg


def weak_masks(
    image: np.ndarray,
    cam: np.ndarray,
    tags: np.ndarray,
    refine: bool = True,
    threshold: float = 0.5,
    largest: bool = False,
    **refine_opts: float,
) -> np.ndarray:
    """Weak label volume (z, y, x) uint8 from a scan, its maps (CAM or anomaly) and per-slice
    tags.

    Positive slices: 1 inside the weak mask, 0 outside (refined with :func:`refine_mask`, or
    :func:`threshold_mask` when ``refine`` is false). Negative: all 0. Untagged: all 255.
    """
    img = np.asarray(image)
    cam = np.asarray(cam)
    if img.ndim == 2:
        img, cam = img[None], cam[None]
    tags = np.asarray(tags)
    if len(tags) != len(img) or cam.shape != img.shape:
        raise ValueError(f"shapes differ: image {img.shape}, cam {cam.shape}, {len(tags)} tags")
    out = np.full(img.shape, IGNORE_INDEX, dtype=np.uint8)
    for z, t in enumerate(tags):
        if t == UNTAGGED:
            continue
        if t == 0:
            out[z] = 0
            continue
        if refine:
            m = refine_mask(img[z], cam[z], **refine_opts)
        else:
            m = threshold_mask(cam[z], threshold, int(refine_opts.get("min_size", 20)), largest)
        out[z] = m.astype(np.uint8)
    return out


def encode_weak(weak: np.ndarray, tags: np.ndarray | None = None) -> np.ndarray:
    """Mark a weak label volume for ``cam_weak``: class c -> ``WEAK_BASE + c``; 255 stays.

    Slices tagged negative (``tags == 0``) stay plain 0: "no structure here" is what the user
    said, so the teacher may not overrule it.
    """
    weak = np.asarray(weak).astype(np.uint8)
    out = np.where(weak == IGNORE_INDEX, IGNORE_INDEX, weak + WEAK_BASE).astype(np.uint8)
    if tags is not None:
        neg = np.asarray(tags) == 0
        out[neg] = np.where(weak[neg] == IGNORE_INDEX, IGNORE_INDEX, weak[neg])
    return out


def combine_labels(user: np.ndarray, weak_encoded: np.ndarray) -> np.ndarray:
    """User labels (0..C-1, 255 elsewhere) win over encoded weak labels voxel by voxel."""
    user = np.asarray(user)
    return np.where(user != IGNORE_INDEX, user, weak_encoded).astype(np.uint8)


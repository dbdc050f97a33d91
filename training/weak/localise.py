"""Where is the structure on a slice tagged "present"? Localisation maps for weak masks.

A weak mask is only as good as the map that seeds it. The tag classifier's CAM points at
whatever separates tagged from untagged slices in the *training* patients; on LGG that was the
slice level (mid-brain slices hold the tumours), so on unseen patients its peak sat near the
image centre whatever the tumour's position (2 Dice, issue 13).

:func:`anomaly_map` needs no learning, so it has nothing patient-specific to overfit: every
pixel's intensity is compared with the tissue of the same scan's slices tagged "absent" (the
seed paper's idea of contrasting the tumour pool with the tumour-free pool, reduced to its
simplest model of "healthy": a robust intensity distribution). It suits structures that stand
out by intensity (FLAIR hyperintensities); :func:`localisation_maps` can also multiply it with
the CAM, or use the CAM alone.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LOCALISERS = ("anomaly", "cam", "cam*anomaly")
# chosen by hit rate over patient folds (benchmarks/results/lgg_weak.md)
DEFAULT_LOCALISER = "anomaly"


# How each map becomes a weak mask. The anomaly map is already a region (smoothed intensity),
# so its half-peak largest blob is the mask: 62.0 +- 12.3 Dice per patient over the 10 shared
# LGG patients' tumour slices, against 50.0 for the random walker tuned for CAMs (slice mean;
# thresholds 0.3-0.6 gave 47-62, 0.5 and 0.6 tie). CAMs cover only the most telling part of a
# lesion, so they seed the random walker instead.
WEAK_MASK_RECIPE: dict[str, dict] = {
    "anomaly": {"refine": False, "threshold": 0.5, "largest": True},
    "cam": {"refine": True},
    "cam*anomaly": {"refine": True},
}


def interior(x: np.ndarray, erode: float = 0.09) -> np.ndarray:
    """Inside of the body on each slice of a normalised (z, y, x) volume, ``erode`` x the slice
    width away from its outline (drops the scalp and skull, whose fat is bright in FLAIR)."""
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(x.shape, dtype=bool)
    lo = float(x.min())
    for z in range(len(x)):
        body = ndimage.binary_fill_holes(x[z] > lo + 0.3)
        if body.any():
            out[z] = ndimage.distance_transform_edt(body) > erode * x.shape[-1]
    return out


def anomaly_map(
    x: np.ndarray,
    tags: np.ndarray | None = None,
    erode: float = 0.09,
    clip: float = 3.0,
    smooth: float = 0.03,
    polarity: int = 1,
) -> np.ndarray:
    """Peak-normalised (z, y, x) map of how far each pixel is from "absent" tissue.

    ``x`` is a normalised volume; ``tags`` (1/0/-1 per slice) name the reference pool: the
    interior of the slices tagged 0, or of every slice when none is (a lesion is a minority of
    voxels, so the median still describes normal tissue). The robust z-score against that pool
    (median, 1.4826 x MAD) is clipped at ``clip`` so that one very bright pixel cannot outweigh
    a region, smoothed over ``smooth`` x the slice width (lesions are blobs, noise is not) and
    scaled to a peak of 1 per slice. ``polarity`` -1 looks for dark instead of bright.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    inside = interior(x, erode)
    pool = inside.copy()
    if tags is not None and (np.asarray(tags) == 0).any() and inside[np.asarray(tags) == 0].any():
        pool[np.asarray(tags) != 0] = False
    ref = x[pool] if pool.any() else x.reshape(-1)
    med = float(np.median(ref))
    mad = 1.4826 * float(np.median(np.abs(ref - med))) + 1e-6
    z = np.clip(polarity * (x - med) / mad, 0.0, clip)
    z = np.where(inside, z, 0.0)
    sigma = smooth * x.shape[-1]
    if sigma >= 0.5:
        z = ndimage.gaussian_filter(z, sigma=(0, sigma, sigma))
    z = np.where(inside, z, 0.0)
    peak = z.reshape(len(z), -1).max(axis=1).clip(min=1e-8)
    return (z / peak[:, None, None]).astype(np.float32)


def combine(cam: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """CAM x anomaly, peak-normalised per slice (both must agree)."""
    m = np.asarray(cam, np.float32) * np.asarray(anomaly, np.float32)
    peak = m.reshape(len(m), -1).max(axis=1).clip(min=1e-8)
    return (m / peak[:, None, None]).astype(np.float32)


def hit_rate(maps: np.ndarray, masks: np.ndarray) -> tuple[int, int]:
    """(hits, slices): slices holding the structure whose map peak lies inside it."""
    hits = n = 0
    for m, g in zip(np.asarray(maps), np.asarray(masks), strict=True):
        if not g.any():
            continue
        n += 1
        hits += bool(g.flat[int(np.argmax(m))])
    return hits, n

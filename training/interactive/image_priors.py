"""Filling the slices between painted ones by following the image, not only the painted shapes.

Shape interpolation (:mod:`training.interactive.interpolation`) blends each structure's signed
distance between the nearest painted slices and never looks at the scan. Two image-aware fills, and
their combination, share its conventions (255 = not annotated, several classes, the same
output as :func:`~training.interactive.interpolation.interpolate_between_slices`):

- ``"register"``: each painted slice's signed distances are carried slice by slice towards the
  next painted one by 2-D demons registration of neighbouring slices (SimpleITK), from both
  sides, and the two carried maps are blended by distance, as interpolation blends the painted
  ones. With no motion in the image it is exactly shape interpolation.
- ``"refine"``: the interpolated outline is redrawn on the image by a random walker
  (scikit-image), seeded by the blend's inside shrunk and its outside grown by a band that
  widens with the distance from the nearest painted slice, where interpolation is least sure.
- ``"register+refine"``: the registered blend, redrawn by the random walker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, zoom

from training import IGNORE_INDEX
from training.interactive.interpolation import (
    _blended_distances,
    _unknown_ends,
    blend_distances,
    labels_from_distances,
    painted_slices,
    signed_distance,
)

PRIORS = ("register", "refine", "register+refine")

#: Demons settings, chosen on the LA train scans and LGG val patients
#: (benchmarks/results/prior_choice.md): 20 iterations between neighbouring slices, a field
#: smoothed by 1.5 px so the carried outline does not follow noise, on images shrunk 3 times
#: in-plane (the field is smooth anyway; 1.5 s per LA scan on one core).
DEMONS_ITERATIONS = 20
DEMONS_SMOOTHING = 1.5
REGISTER_SHRINK = 3
#: Random walker: edge sensitivity, and the band left to it around the outline (pixels):
#: ``BAND[0]`` next to a painted slice, growing by ``BAND[1]`` per slice away from it.
WALKER_BETA = 130.0
BAND = (2.0, 0.5)
#: In-plane margin (pixels) around the painted structures within which anything is computed.
MARGIN = 16
SETTINGS = ("DEMONS_ITERATIONS", "DEMONS_SMOOTHING", "REGISTER_SHRINK", "WALKER_BETA", "BAND",
            "MARGIN")


def fill_between_slices(
    labels: np.ndarray,
    image: np.ndarray,
    prior: str = "register",
    painted: Sequence[int] | None = None,
    axis: int = 0,
    ends: str = "shrink",
) -> np.ndarray:
    """Fill the unpainted slices of ``labels`` (255 = not annotated) along ``axis``, on ``image``.

    ``prior`` is one of :data:`PRIORS`; ``painted`` the slices to fill from (default: every slice
    with an annotated voxel). Returns a full label volume like
    :func:`~training.interactive.interpolation.interpolate_between_slices`: painted slices as given,
    slices between two painted ones filled, the rest background (0). With ``ends="unknown"`` a gap
    whose two painted slices show different structures is left 255, as
    :func:`~training.interactive.interpolation.interpolation_prior` leaves it.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, not {prior!r}")
    lab, painted, known = painted_slices(labels, painted, axis)
    img = np.moveaxis(np.asarray(image), axis, 0)
    if img.shape != lab.shape:
        raise ValueError(f"image {img.shape} and labels {lab.shape} differ in shape")
    if not painted:
        raise ValueError("no painted slice: paint the structure on at least two slices to "
                         "fill between them")
    out = np.zeros(lab.shape, np.uint8)
    out[painted] = known[painted]
    classes = [int(c) for c in np.unique(known[painted]) if c != 0]
    box = _box(known[painted], MARGIN)
    if box is None:  # nothing but background painted: nothing to fill
        return np.moveaxis(out, 0, axis)
    grey = _normalise(img[(slice(None), *box)])
    crop = known[(slice(None), *box)]
    if prior == "refine":
        dists = _blended_distances(crop, painted, classes)
    else:
        dists = registered_distances(crop, grey, painted, classes)
    unknown = _unknown_ends(known, painted, ends)
    for z, dist in dists:
        if z in unknown:
            out[z] = IGNORE_INDEX
            continue
        lo, hi = _neighbours(painted, z)
        band = BAND[0] + BAND[1] * min(z - lo, hi - z)
        if prior == "register":
            sl = labels_from_distances(dist, crop.shape[1:])
        else:
            sl = walk(dist, grey[z], band)
        out[z][box] = sl
    return np.moveaxis(out, 0, axis)


def registered_distances(known: np.ndarray, grey: np.ndarray, painted: list[int],
                         classes: Sequence[int]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """For each slice between two painted ones: (z, {class: signed distance}), each painted
    slice's distances carried to it by registration from both sides and blended by distance.
    ``grey`` is the image scaled to [0, 1]."""
    small = _shrunk(grey)
    for lo, hi in zip(painted[:-1], painted[1:], strict=True):
        if hi - lo < 2:
            continue
        inner = range(lo + 1, hi)
        down = _carried(known[lo], classes, small, inner, -1)
        up = _carried(known[hi], classes, small, inner[::-1], +1)
        for i, z in enumerate(inner):
            t = (z - lo) / (hi - lo)
            out = {c: blend_distances(down[c][i], up[c][-1 - i], t) for c in classes}
            yield z, {c: d for c, d in out.items() if d is not None}


def _carried(painted_slice: np.ndarray, classes: Sequence[int], small: np.ndarray,
             slices: range, step: int) -> dict[int, list[np.ndarray]]:
    """Each class's signed distance on ``painted_slice`` warped onto each of ``slices`` in turn,
    each step by the registration of a slice onto its neighbour (``step``: where that neighbour
    lies). An absent class stays absent (:func:`blend_distances` shrinks it)."""
    sdf = {c: signed_distance(painted_slice == c) for c in classes}
    present = [c for c in classes if not np.isinf(sdf[c]).all()]
    out = {c: [sdf[c]] * len(slices) for c in classes}
    if not present:
        return out
    cur = {c: sdf[c] for c in present}
    for c in present:
        out[c] = []
    for z in slices:
        flow = _demons(small[z], small[z + step], painted_slice.shape)
        for c in present:
            cur[c] = _warp(cur[c], flow)
            out[c].append(cur[c])
    return out


def slice_flow(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Displacement (2, H, W) in pixels (dy, dx) taking ``fixed``'s grid into ``moving``:
    ``moving(p + flow(p))`` lies on ``fixed(p)``. Symmetric-forces demons on shrunk images."""
    small = _shrunk(np.stack([fixed, moving]))
    return _demons(small[0], small[1], fixed.shape)


def _shrunk(grey: np.ndarray) -> np.ndarray:
    """Slices smoothed and shrunk :data:`REGISTER_SHRINK` times in-plane for registration."""
    s = REGISTER_SHRINK
    return gaussian_filter(grey, (0, s / 2, s / 2))[:, ::s, ::s] if s > 1 else grey


def _demons(fixed: np.ndarray, moving: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`slice_flow` of two shrunk slices, brought back to full-size ``shape``."""
    import SimpleITK as sitk

    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(DEMONS_ITERATIONS)
    demons.SetStandardDeviations(DEMONS_SMOOTHING)
    field = sitk.GetArrayFromImage(demons.Execute(
        *(sitk.GetImageFromArray(np.ascontiguousarray(im, np.float32)) for im in (fixed, moving))))
    flow = np.stack([field[..., 1], field[..., 0]])  # SimpleITK vectors are (x, y)
    if flow.shape[1:] != tuple(shape):
        factors = [h / n for h, n in zip(shape, flow.shape[1:], strict=True)]
        flow = np.stack([zoom(f, factors, order=1) * REGISTER_SHRINK for f in flow])
    return flow


def _warp(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    grid = np.indices(values.shape, dtype=np.float64)
    return map_coordinates(values, grid + flow, order=1, mode="nearest")


def walk(dist: dict[int, np.ndarray], grey: np.ndarray, band: float,
         beta: float | None = None) -> np.ndarray:
    """One slice's labels from per-class signed distances, redrawn on ``grey`` by a random
    walker: each class is sure deeper than ``band`` inside its outline (at most half its
    depth, so thin structures keep a seed), background farther than ``band`` outside all."""
    from skimage.segmentation import random_walker

    shape = grey.shape
    guess = labels_from_distances(dist, shape)
    seeds = np.zeros(shape, np.int32)  # 0 = left to the walker
    seeds[np.all([d > band for d in dist.values()], axis=0) if dist else slice(None)] = 1
    order = sorted(dist)
    for i, c in enumerate(order):
        depth = -float(dist[c].min())
        if depth <= 0:
            continue
        seeds[(guess == c) & (dist[c] < -min(band, depth / 2))] = i + 2
    free = seeds == 0
    if not free.any() or len(np.unique(seeds[~free])) < 2:
        return guess
    ys, xs = np.nonzero(free)  # the walker needs only the band and a rim of seeds
    box = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
    walked = random_walker(grey[box], seeds[box], beta=WALKER_BETA if beta is None else beta,
                           mode="bf")
    result = guess.copy()
    lut = np.array([0, 0, *order], np.uint8)
    result[box] = lut[walked]
    return result


def _neighbours(painted: list[int], z: int) -> tuple[int, int]:
    i = int(np.searchsorted(painted, z))
    return painted[i - 1], painted[i]


def _box(painted_labels: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """In-plane bounding box of every painted structure, grown by ``margin``."""
    fg = (painted_labels != 0).any(0)
    if not fg.any():
        return None
    box = []
    for ax, n in enumerate(fg.shape):
        idx = np.flatnonzero(fg.any(1 - ax))
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, n)))
    return box[0], box[1]


def _normalise(image: np.ndarray) -> np.ndarray:
    """Scans store integers on any scale: 1st..99.5th percentile to [0, 1]."""
    lo, hi = np.percentile(image, [1, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)

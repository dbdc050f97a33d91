"""Shape-based interpolation between painted slices: what clinicians use today.

This is "fill between slices" of 3D Slicer and ITK-SNAP, the baseline every learning feature is
measured against (GUIDE §5): each structure's signed distance map is blended linearly between
the nearest painted slices above and below, and the blend's inside is the structure. Slices
outside the painted range stay background, as those tools leave them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from training import IGNORE_INDEX

#: Between a painted slice showing a structure and one without it, the structure ends somewhere
#: that the two slices do not tell. "shrink" blends it to nothing across the gap (fill between
#: slices); "unknown" leaves such gaps to the network (no prior, no pseudo-labels there): a
#: suggested empty end slice then no longer pulls the structure out of the whole gap. Chosen
#: with training.interactive.loop.KEEP_MAIN_PIECE on 3 LA train scans and 5 LGG patients not
#: reported
#: elsewhere (benchmarks/results/effort_choice_ends.md): 39 slices against 45, mean final Dice
#: 84.3 against 84.4, lowest scan 79.9 against 76.9.
ENDS = "unknown"


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance of a 2-D mask: negative inside, positive outside, in pixels."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, np.inf)
    if mask.all():
        return np.full(mask.shape, -np.inf)
    return distance_transform_edt(~mask) - distance_transform_edt(mask)


def _painted(lab: np.ndarray) -> list[int]:
    """Slices (axis 0) holding at least one annotated voxel."""
    return [int(z) for z in np.flatnonzero((lab != IGNORE_INDEX).reshape(len(lab), -1).any(1))]


def painted_slices(labels: np.ndarray, painted: Sequence[int] | None = None, axis: int = 0
                   ) -> tuple[np.ndarray, list[int], np.ndarray]:
    """What every fill between slices starts from: the labels with ``axis`` first, the painted
    slices (given, or every slice with an annotated voxel), and the labels with "not
    annotated" (255) read as background."""
    lab = np.moveaxis(np.asarray(labels), axis, 0)
    painted = sorted({int(z) for z in (_painted(lab) if painted is None else painted)})
    return lab, painted, np.where(lab == IGNORE_INDEX, 0, lab).astype(np.uint8)


def _blended_distances(known: np.ndarray, painted: list[int], classes: Sequence[int]):
    """For each slice between two painted ones: (z, {class: blended signed distance}).

    A structure present on one side only shrinks to nothing across the gap: "absent" counts
    as a distance as far outside as the other side's extent.
    """
    sdf = {c: {z: signed_distance(known[z] == c) for z in painted} for c in classes}
    for lo, hi in zip(painted[:-1], painted[1:], strict=True):
        for z in range(lo + 1, hi):
            t = (z - lo) / (hi - lo)
            out = {c: blend_distances(sdf[c][lo], sdf[c][hi], t) for c in classes}
            yield z, {c: d for c, d in out.items() if d is not None}


def blend_distances(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray | None:
    """``(1 - t) * a + t * b`` of two signed distance maps; None when both are empty.

    A structure absent on one side (all +inf) counts as lying as far outside as the other
    side's extent, so it shrinks to nothing across the gap."""
    if np.isinf(a).all() and np.isinf(b).all():
        return None
    ref = b if np.isinf(a).all() else a
    far = np.nanmax(np.abs(np.where(np.isinf(ref), np.nan, ref)))
    return (1 - t) * np.where(np.isinf(a), far, a) + t * np.where(np.isinf(b), far, b)


def labels_from_distances(dist: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """One slice's labels from per-class signed distances: the most negative one wins; no
    negative one is background."""
    out = np.zeros(shape, np.uint8)
    best = np.zeros(shape, np.float64)
    for c, d in dist.items():
        inside = d < best
        out[inside] = c
        best = np.where(inside, d, best)
    return out


def _unknown_ends(known: np.ndarray, painted: list[int], ends: str) -> set[int]:
    """Slices between two consecutive painted ones that show different structures, when
    ``ends`` is "unknown"; empty for "shrink"."""
    if ends not in ("shrink", "unknown"):
        raise ValueError(f"ends must be 'shrink' or 'unknown', not {ends!r}")
    if ends == "shrink":
        return set()
    present = {z: set(np.unique(known[z]).tolist()) - {0} for z in painted}
    return {z for lo, hi in zip(painted[:-1], painted[1:], strict=True)
            if present[lo] != present[hi] for z in range(lo + 1, hi)}


def interpolate_between_slices(
    labels: np.ndarray, painted: Sequence[int] | None = None, axis: int = 0
) -> np.ndarray:
    """Fill the unpainted slices of ``labels`` (255 = not annotated) along ``axis``.

    ``painted`` are the slice indices to interpolate from (default: every slice with an annotated
    voxel). Returns a full label volume: painted slices as given, slices between two painted
    ones interpolated class by class, the rest background (0).
    """
    lab, painted, known = painted_slices(labels, painted, axis)
    out = np.zeros(lab.shape, np.uint8)
    if not painted:
        return np.moveaxis(out, 0, axis)
    classes = [int(c) for c in np.unique(known[painted]) if c != 0]
    for z, dist in _blended_distances(known, painted, classes):
        out[z] = labels_from_distances(dist, lab.shape[1:])
    for z in painted:
        out[z] = known[z]
    return np.moveaxis(out, 0, axis)


def even_slices(truth: np.ndarray, k: int, axis: int = 0) -> list[int]:
    """``k`` evenly spaced slices from the structure's first to its last slice (the baseline's
    choice of what to paint)."""
    fg = np.moveaxis(np.asarray(truth), axis, 0)
    present = np.flatnonzero(((fg != 0) & (fg != IGNORE_INDEX)).reshape(len(fg), -1).any(1))
    if len(present) == 0:
        return []
    first, last = int(present[0]), int(present[-1])
    k = max(1, min(k, last - first + 1))
    if k == 1:
        return [(first + last) // 2]
    return sorted({int(round(first + i * (last - first) / (k - 1))) for i in range(k)})


def interpolation_prior(labels: np.ndarray, axis: int = 0, band: float = 2.0,
                        ends: str | None = None, filled: np.ndarray | None = None
                        ) -> np.ndarray:
    """Pseudo-labels for the unpainted slices between painted ones, from interpolation.

    Within ``band`` pixels of an interpolated boundary the answer is least sure, so it is left
    "not annotated" (255), as are the painted slices themselves (the user's own labels train on
    those), every slice outside the painted range, and with ``ends="unknown"`` (default
    :data:`ENDS`) every gap where a structure ends. Fewer than two painted slices: all 255.
    ``filled``: another fill of the gaps (the registered one of
    :mod:`training.interactive.image_priors`) to take the pseudo-labels from instead.
    """
    lab = np.moveaxis(np.asarray(labels), axis, 0)
    painted = _painted(lab)
    out = np.full(lab.shape, IGNORE_INDEX, np.uint8)
    if len(painted) < 2:
        return np.moveaxis(out, 0, axis)
    known = np.where(lab == IGNORE_INDEX, 0, lab)
    unknown = _unknown_ends(known, painted, ENDS if ends is None else ends)
    if filled is None:
        filled = interpolate_between_slices(labels, painted, axis)
    elif np.shape(filled) != np.shape(labels):
        raise ValueError(f"the fill's shape {np.shape(filled)} is not the labels' "
                         f"{np.shape(labels)}")
    filled = np.moveaxis(np.asarray(filled), axis, 0)
    for z in range(painted[0] + 1, painted[-1]):
        if z in painted or z in unknown:
            continue
        sl = filled[z].copy()
        unsure = np.zeros(sl.shape, bool)
        for c in np.unique(sl):
            if c == 0:
                continue
            unsure |= np.abs(signed_distance(sl == c)) <= band
        sl[unsure] = IGNORE_INDEX
        out[z] = sl
    return np.moveaxis(out, 0, axis)


def interpolation_probabilities(labels: np.ndarray, num_classes: int, axis: int = 0,
                                softness: float = 2.0, ends: str | None = None,
                                filled: np.ndarray | None = None
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Soft interpolation between painted slices: (C, ...) probabilities and a boolean per slice
    along ``axis`` saying which slices they cover (painted ones and those between them).

    Each class's blended signed distance ``d`` becomes ``sigmoid(-d / softness)``, so the
    interpolated outline is 0.5 and certainty grows with the distance from it. With
    ``ends="unknown"`` (default :data:`ENDS`) a gap where a structure ends is not covered.
    ``filled``: another fill of the same gaps (e.g. the registered one of
    :mod:`training.interactive.image_priors`), whose outlines replace the blended ones.
    """
    lab, painted, known = painted_slices(labels, None, axis)
    probs = np.zeros((num_classes, *lab.shape), np.float32)
    covered = np.zeros(len(lab), bool)
    for z in painted:
        probs[:, z] = known[z][None] == np.arange(num_classes)[:, None, None]
        covered[z] = True
    unknown = _unknown_ends(known, painted, ENDS if ends is None else ends)
    if filled is None:
        dists = _blended_distances(known, painted, range(1, num_classes))
    else:
        fill = np.moveaxis(np.asarray(filled), axis, 0)
        dists = ((z, {c: signed_distance(fill[z] == c) for c in range(1, num_classes)})
                 for z in range(painted[0] + 1, painted[-1]) if z not in painted) \
            if painted else iter(())
    for z, dist in dists:
        if z in unknown:
            continue
        fg = np.zeros((num_classes, *lab.shape[1:]), np.float32)
        for c, d in dist.items():
            fg[c] = 1 / (1 + np.exp(np.clip(d / softness, -50, 50)))
        fg[0] = np.prod(1 - fg[1:], axis=0)
        probs[:, z] = fg / np.maximum(fg.sum(0, keepdims=True), 1e-6)
        covered[z] = True
    return np.moveaxis(probs, 1, axis + 1), covered


def gap_position(n: int, painted: Sequence[int]) -> np.ndarray:
    """Per slice of ``n``: 0 on a painted slice, rising to 1 midway between two painted ones
    (1 outside the painted range): how far the fill between them has to guess."""
    t = np.ones(n)
    ps = sorted({int(z) for z in painted})
    for lo, hi in zip(ps, ps[1:], strict=False):
        z = np.arange(lo, hi + 1)
        t[lo:hi + 1] = np.minimum(z - lo, hi - z) / max((hi - lo) / 2, 1e-6)
    return t


def gap_shares(n: int, painted: Sequence[int], far: float) -> np.ndarray:
    """The network's share per slice when it grows with the distance from the painted slices:
    ``far`` x sqrt(t) (:func:`gap_position`). Next to a painted slice the fill is nearly the
    user's outline; midway across a wide gap it guesses, and a good network knows better."""
    return far * np.sqrt(gap_position(n, painted))


def fuse_with_interpolation(network_probs: np.ndarray, labels: np.ndarray, weight: float = 0.5,
                            axis: int = 0, softness: float = 2.0, ends: str | None = None,
                            filled: np.ndarray | None = None, by_gap: bool = False
                            ) -> np.ndarray:
    """Labels from the network's probabilities (C, ...) blended with the soft interpolation of
    the painted slices where it covers (``weight`` = the network's share); the network alone
    elsewhere. The shape prior keeps a young model on the user's outline; the image decides
    the rest. ``filled``, ``by_gap``: see :func:`interpolation_probabilities` and
    :func:`fused_probabilities`."""
    return fused_probabilities(network_probs, labels, weight, axis, softness, ends,
                               filled, by_gap).argmax(0).astype(np.uint8)


def fused_probabilities(network_probs: np.ndarray, labels: np.ndarray, weight: float = 0.5,
                        axis: int = 0, softness: float = 2.0, ends: str | None = None,
                        filled: np.ndarray | None = None, by_gap: bool = False) -> np.ndarray:
    """The class probabilities (C, ...) whose argmax :func:`fuse_with_interpolation` shows:
    ``weight`` x the network's + the rest x the soft fill where it covers, the network's
    elsewhere. With ``by_gap`` the share grows from 0 on a painted slice to ``weight`` midway
    between two (:func:`gap_shares`). Their entropy is high where the two disagree."""
    prior, covered = interpolation_probabilities(labels, network_probs.shape[0], axis, softness,
                                                 ends, filled)
    shape = [1] * network_probs.ndim
    shape[axis + 1] = -1
    mask = covered.reshape(shape)
    share = network_share(labels, weight, axis, by_gap)
    return np.where(mask, share * network_probs + (1 - share) * prior, network_probs)


def network_share(labels: np.ndarray, weight: float, axis: int = 0, by_gap: bool = False
                  ) -> float | np.ndarray:
    """The network's share in a blend with the fill between the painted ``labels``: ``weight``,
    or with ``by_gap`` :func:`gap_shares` shaped to broadcast over (C, ...) probabilities."""
    if not by_gap:
        return weight
    painted = painted_slices(labels, None, axis)[1]
    shape = [1] * (np.ndim(labels) + 1)
    shape[axis + 1] = -1
    n = np.shape(labels)[axis]
    return gap_shares(n, painted, weight).reshape(shape).astype(np.float32)

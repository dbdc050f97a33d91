"""What a napari paint event says, decoded: pure functions on arrays, no session, no Qt.

napari reports an edit of a Labels layer (brush, eraser, fill, polygon) as one history item: a
list of atoms, each either a masked atom (``slice_key`` bounding box, ``mask``, ``new_value``;
napari >= 0.6) or an ``(indices, old values[, new values])`` tuple. :func:`painted_slices` says
which slices it touched; :func:`apply_paint` writes its new values into an array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def apply_paint(labels: np.ndarray, value: Any) -> int | None:
    """Write the new values a napari paint event carries into ``labels`` (in place); returns the
    largest value painted (None when the event carries none).

    napari emits the event before it writes a programmatic edit (paint, fill, polygon) to
    the array, so the values are taken from the event itself; napari then writes the same
    values. Plain coordinate tuples carry no values and change nothing.
    """
    if hasattr(value, "slice_key"):  # masked atom: bounding box, changed pixels, new label
        box = tuple(value.slice_key)
        if value.mask is None:
            labels[box] = value.new_value
        else:
            region = labels[box]  # basic slicing: a view, edited in place
            region[value.mask] = value.new_value
        return int(np.max(value.new_value))
    if isinstance(value, list):
        painted = [v for v in (apply_paint(labels, atom) for atom in value) if v is not None]
        return max(painted) if painted else None
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], tuple):
        labels[value[0]] = value[2]  # (indices, old values, new values)
        return int(np.max(value[2])) if np.size(value[2]) else None
    return None


def painted_slices(value: Any, axis: int, shape: Sequence[int]) -> set[int]:
    """Slice indices along ``axis`` of a volume of ``shape`` that a paint event (or part of
    one, or plain per-axis voxel indices) touched."""
    n = shape[axis]
    if hasattr(value, "slice_key"):  # napari >= 0.6 masked atom: a bounding box (+ mask)
        box = value.slice_key[axis]
        start = box.start or 0
        mask = getattr(value, "mask", None)
        if mask is not None and mask.ndim == len(value.slice_key):
            other = tuple(a for a in range(mask.ndim) if a != axis)
            hits = np.flatnonzero(mask.any(axis=other)) + start
        else:
            hits = np.arange(start, n if box.stop is None else box.stop)
        return {int(i) for i in hits if 0 <= i < n}
    if isinstance(value, list):  # one history item: a list of atoms
        out: set[int] = set()
        for atom in value:
            out |= painted_slices(atom, axis, shape)
        return out
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return painted_slices(value[0], axis, shape)  # (indices, old[, new]) atom
    coords = tuple(value)
    if len(coords) != len(shape):
        raise ValueError(f"painted indices have {len(coords)} axes, the scan has {len(shape)}")
    c = coords[axis]
    found = range(*c.indices(n)) if isinstance(c, slice) else np.unique(np.asarray(c)).tolist()
    return {int(i) for i in found if 0 <= int(i) < n}

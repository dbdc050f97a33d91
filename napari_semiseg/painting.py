"""Which slices a napari brush or eraser stroke touched (Qt-free, so it is testable headless)."""

from __future__ import annotations

from typing import Any

import numpy as np


def painted_slices(atoms: list[Any], axis: int, ndim: int) -> set[int]:
    """Slice indices along ``axis`` changed by one napari Labels ``paint`` event.

    napari (0.5+) reports a list of history atoms: either a masked atom with a ``slice_key``
    bounding box and an optional ``mask`` of changed voxels, or a legacy tuple whose first item
    is a numpy multi-index of the changed voxels.
    """
    found: set[int] = set()
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            box = key[axis]
            start = box.start or 0
            mask = getattr(atom, "mask", None)
            if mask is not None:
                other = tuple(a for a in range(mask.ndim) if a != axis)
                hit = np.flatnonzero(np.asarray(mask).any(axis=other))
                found |= {int(start + i) for i in hit}
            else:
                found |= set(range(start, box.stop))
            continue
        if isinstance(atom, tuple) and atom:
            index = atom[0]
            if isinstance(index, tuple) and len(index) == ndim:
                found |= {int(i) for i in np.unique(np.asarray(index[axis]))}
    return found

"""Neighbouring slices as extra input channels of a 2-D network ("2.5-D").

A 2-D network sees one slice; a structure's continuity across slices (an abnormality that goes
on above and below, a bright vessel that does not) is then invisible to it. With ``k`` context
slices each slice is given with the ``k`` slices above and below it, neighbour by neighbour,
each with all of the scan's own channels: (z, c, y, x) becomes (z, (2k+1)·c, y, x). At a scan's
first and last slices the missing neighbours repeat the edge slice, so a one-slice scan still
predicts. Training and Predict both call :func:`with_context_slices`, so they see one layout.
"""

from __future__ import annotations

import numpy as np


def with_context_slices(scan: np.ndarray, k: int) -> np.ndarray:
    """A normalised scan (z, y, x) or (z, c, y, x) with each slice's ``k`` neighbours on either
    side as channels: (z, (2k+1)·c, y, x), the slice itself in the middle group."""
    if k <= 0:
        return scan
    s = scan[:, None] if scan.ndim == 3 else scan
    z = len(s)
    offsets = np.arange(-k, k + 1)
    index = np.clip(np.arange(z)[:, None] + offsets[None], 0, z - 1)  # (z, 2k+1)
    out = s[index]  # (z, 2k+1, c, y, x)
    return np.ascontiguousarray(out.reshape(z, -1, *s.shape[-2:]))


def network_inputs(scan_channels: int, k: int) -> int:
    """Input channels of a network that reads ``k`` context slices of a ``scan_channels`` scan."""
    return int(scan_channels) * (2 * int(k) + 1)


def scan_channels(network_inputs: int, k: int) -> int:
    """The scan's own channels behind a network's ``network_inputs`` with ``k`` context slices."""
    return int(network_inputs) // (2 * int(k) + 1)

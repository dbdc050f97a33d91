"""napari writer: a layer saved with its source scan's geometry (npe2 single-layer writers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .io import Geometry, write_volume


def layer_geometry(data: np.ndarray, meta: dict[str, Any]) -> Geometry:
    """The source scan's geometry from layer metadata, else one built from scale/translate."""
    g = (meta.get("metadata") or {}).get("geometry")
    if g is not None:
        return Geometry.from_dict(g)
    ndim = np.asarray(data).ndim
    return Geometry.identity(ndim, meta.get("scale"), meta.get("translate"))


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    arr = np.asarray(data)
    out = arr.astype(np.uint8) if arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0 else arr
    return [write_volume(path, out, layer_geometry(arr, meta))]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    if meta.get("rgb"):
        raise ValueError("RGB layers are not saved by napari-semiseg; save a label or grey layer")
    arr = np.asarray(data)
    return [write_volume(path, arr, layer_geometry(arr, meta))]

"""napari writer: a layer saved with its source scan's geometry (npe2 single-layer writers).

``.dcm`` saves a Labels layer as a DICOM-SEG onto the DICOM series its scan was opened from,
with the structures' names (the layer's ``name`` feature, as the assistant sets it) and colours.

napari takes a ValueError from a writer for "this writer does not apply" and only warns that
the plugin "is not a valid writer", so a refusal is raised as :class:`SaveError` instead: the
user then sees the reason as an error notification.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.core.io import SEG_SUFFIX

from .io import NOT_ANNOTATED, DataError, Geometry, has_suffix, write_volume


class SaveError(RuntimeError):
    """A layer that cannot be saved as asked; the message names the file and the reason."""


def _refusals_shown(write: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Re-raise a ValueError (a refused layer or path) as :class:`SaveError` (see above)."""

    @functools.wraps(write)
    def wrapper(path: str, data: Any, meta: dict) -> list[str]:
        try:
            return write(path, data, meta)
        except ValueError as e:
            raise SaveError(str(e)) from e

    return wrapper


def layer_geometry(data: np.ndarray, meta: dict[str, Any]) -> Geometry:
    """The source scan's geometry from layer metadata, else one built from scale/translate."""
    g = (meta.get("metadata") or {}).get("geometry")
    if g is not None:
        return Geometry.from_dict(g)
    ndim = np.asarray(data).ndim
    return Geometry.identity(ndim, meta.get("scale"), meta.get("translate"))


@_refusals_shown
def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    arr = np.asarray(data)
    out = arr.astype(np.uint8) if arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0 else arr
    if has_suffix(path, (SEG_SUFFIX,)):
        return [write_seg_layer(path, out, meta)]
    return [write_volume(path, out, layer_geometry(arr, meta))]


@_refusals_shown
def write_image(path: str, data: Any, meta: dict) -> list[str]:
    if meta.get("rgb"):
        raise ValueError("RGB layers are not saved by napari-semiseg; save a label or grey layer")
    if has_suffix(path, (SEG_SUFFIX,)):
        raise DataError(f"{path}: a DICOM-SEG holds labels; save an image as .nii.gz, .nrrd or "
                        f".mha")
    arr = np.asarray(data)
    return [write_volume(path, arr, layer_geometry(arr, meta))]


def write_seg_layer(path: str, labels: np.ndarray, meta: dict) -> str:
    """A Labels layer as a DICOM-SEG on its scan's series; "not annotated" is no segment."""
    from napari.utils.notifications import show_info

    from training.core.dicom import is_series_folder
    from training.core.dicom_seg import segments_for, write_seg

    geometry = layer_geometry(labels, meta)
    if not geometry.source or not is_series_folder(geometry.source):
        raise DataError(f"{path}: a DICOM-SEG is saved onto the DICOM series its scan was "
                        f"opened from; {meta.get('name', 'this layer')!r} comes from "
                        f"{geometry.source or 'no file'}. Save it as .nii.gz, .nrrd or .mha")
    names = layer_names(meta)
    segments = segments_for(labels, names, layer_colors(meta))
    written = write_seg(path, labels, geometry, segments, algorithm="SEMIAUTOMATIC")
    unannotated = int(np.count_nonzero(labels == NOT_ANNOTATED))
    if unannotated:
        show_info(f"{Path(path).name}: {unannotated:,} voxels not annotated (255) are in no "
                  f"segment")
    return written


def layer_names(meta: dict) -> list[str] | None:
    """Structure names by label value from the layer's features (``index``, ``name``)."""
    features = meta.get("features")
    if features is None or "name" not in features:
        return None
    names = [str(n) for n in list(features["name"])]
    index = list(features["index"]) if "index" in features else list(range(len(names)))
    out = [""] * (max((int(i) for i in index), default=-1) + 1)
    for i, n in zip(index, names, strict=True):
        out[int(i)] = n
    return out


def layer_colors(meta: dict) -> dict[int, str]:
    """The colours the layer shows label values in (a direct colormap only: napari's cyclic
    default colours are arbitrary, the palette's are used instead)."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = meta.get("colormap")
    if not isinstance(cmap, DirectLabelColormap):
        return {}
    out = {}
    for k in range(1, NOT_ANNOTATED):
        rgba = cmap.color_dict.get(k)
        if rgba is not None:
            out[k] = "#{:02x}{:02x}{:02x}".format(*(int(round(float(c) * 255)) for c in rgba[:3]))
    return out

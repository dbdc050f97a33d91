"""The plugin's view of the engine's reader and writer (:mod:`training.core.io`).

There is one reader for everything (plugin, sessions, command line); this module only adds what
is napari's business: deciding from a file's name whether it opens as a Labels layer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from training.core.io import (
    MAX_VOXELS,
    NOT_ANNOTATED,
    SLICE_SUFFIXES,
    VOLUME_SUFFIXES,
    WRITE_SUFFIXES,
    DataError,
    Geometry,
    LabelShapeError,
    TimeSeriesError,
    Volume,
    VolumeReadError,
    WriteError,
    case_name,
    check_labels_fit,
    dicom_series_files,
    has_suffix,
    is_png,
    label_values,
    one_value_note,
    png_slices,
    to_sitk,
    write_volume,
)
from training.core.io import read_volume as _read_volume

__all__ = [
    "MAX_VOXELS", "NOT_ANNOTATED", "SLICE_SUFFIXES", "VOLUME_SUFFIXES", "WRITE_SUFFIXES",
    "DataError", "Geometry", "LabelShapeError", "TimeSeriesError", "Volume", "VolumeReadError",
    "WriteError",
    "case_name", "check_labels_fit", "dicom_series_files", "has_suffix", "looks_like_label_path",
    "one_value_note", "png_slices", "read_volume", "strip_suffix", "to_sitk", "write_volume",
]

LABEL_HINTS = ("label", "labels", "seg", "segmentation", "mask", "masks")


def strip_suffix(path: str | os.PathLike) -> str:
    return case_name(path)


def looks_like_label_path(path: str | os.PathLike) -> bool:
    """True when the file or its folder is named like a label map (labels/, *_seg.nii.gz …)."""
    p = Path(path)
    words = re.split(r"[^a-z]+", (strip_suffix(p) + " " + p.parent.name).lower())
    return any(w in LABEL_HINTS for w in words)


def read_volume(path: str | os.PathLike, as_labels: bool | None = None,
                series: str | None = None, time_point: int | None = None) -> Volume:
    """:func:`training.core.io.read_volume`; ``as_labels=None`` decides from the name and dtype.

    A grey integer file named like a label map (``labels/``, ``*_seg.nrrd``) opens as labels
    when its values are those of a label map (0..254 plus 255 = not annotated); with other values
    it is a scan after all and opens as an image, unchanged, and ``vol.extra["not_labels"]``
    says why, for the reader to tell the user. ``series`` chooses one DICOM series of a folder
    holding several; ``time_point`` one time point of a 4-D scan.
    """
    vol = _read_volume(path, as_labels=bool(as_labels), series=series, time_point=time_point)
    if as_labels is None and looks_like_label_path(path):
        why = None
        if vol.rgb:
            why = f"it holds {vol.data.shape[-1]} colour channels per voxel"
        elif not np.issubdtype(vol.data.dtype, np.integer):
            why = f"it holds {vol.data.dtype} values, not integers"
        else:
            try:
                vol.data = label_values(vol.data, str(path), png_binary=is_png(path))
                vol.is_labels = True
            except LabelShapeError as e:
                why = str(e).removeprefix(f"{path}: ")
        if why:
            vol.extra["not_labels"] = (f"{Path(path).name} is named like a label map but {why}; "
                                       f"it was opened as an image")
    return vol

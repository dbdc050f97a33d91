"""Image reading and writing with SimpleITK (arrays are (z, y, x))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".jpg")


RGB_CHANNEL = 1  # LGG PNGs are (pre-contrast, FLAIR, post-contrast); for photos, green ~ luma


def rgb_to_grey(array: np.ndarray) -> np.ndarray:
    """The one grey channel networks see for an RGB(A) image (..., 3|4): the FLAIR channel.

    The LGG masks outline FLAIR abnormality and the tumour contrast is ~3x larger in FLAIR than
    in the channel mean, so every loader (CLI, plugin) keeps channel 1 and drops the rest.
    """
    array = np.asarray(array)
    if array.shape[-1] not in (3, 4):
        raise DataError(f"expected an RGB(A) array (..., 3 or 4), got shape {array.shape}")
    return array[..., RGB_CHANNEL]


class DataError(ValueError):
    """A problem with input files or arrays, reported to the user in one line."""


def case_name(path: str | Path) -> str:
    """File name without its (possibly double) image suffix."""
    name = Path(path).name
    for suf in IMAGE_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def read_image(path: str | Path) -> tuple[np.ndarray, sitk.Image]:
    """Read an image file, returning a (z, y, x) array and the SimpleITK image (for geometry).

    2D images become a single z slice; RGB(A) images keep one channel (:func:`rgb_to_grey`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = rgb_to_grey(arr)
    if arr.ndim == 2:
        arr = arr[None]
    return arr, img


def write_like(array: np.ndarray, reference: sitk.Image, path: str | Path) -> None:
    """Write ``array`` (z, y, x) with the spacing, origin and direction of ``reference``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ref_dim = reference.GetDimension()
    data = array[0] if ref_dim == 2 and array.ndim == 3 and array.shape[0] == 1 else array
    out = sitk.GetImageFromArray(data)
    if out.GetDimension() == ref_dim:
        out.SetSpacing(reference.GetSpacing())
        out.SetOrigin(reference.GetOrigin())
        out.SetDirection(reference.GetDirection())
    try:
        sitk.WriteImage(out, str(path), useCompression=True)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise DataError(f"cannot write {path}: {msg}") from None

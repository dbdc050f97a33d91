"""ITK's morphological contour interpolation: 3D Slicer's "Fill between slices", as a baseline.

Albu et al. 2008, from the PyPI package ``itk-morphologicalcontourinterpolation``: an optional
benchmark extra (``pip install napari-semiseg[bench]``), never needed by the plugin or the
engine. Run as Slicer runs it, with two choices made explicit: it interpolates along the
painting axis only, and it does not extrapolate past the outermost painted slices (this
project's interpolation leaves those background too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training import IGNORE_INDEX
from training.interpolation import _painted

INSTALL_HINT = ("ITK's morphological contour interpolation is an optional benchmark extra: "
                "pip install 'napari-semiseg[bench]' (or itk-morphologicalcontourinterpolation)")


def contour_interpolation_available() -> bool:
    """Whether the optional ITK package is installed."""
    try:
        import itk  # noqa: F401
    except ImportError:
        return False
    return hasattr(itk, "MorphologicalContourInterpolator")


def morphological_contour_interpolation(
    labels: np.ndarray, painted: Sequence[int] | None = None, axis: int = 0
) -> np.ndarray:
    """Fill the unpainted slices of ``labels`` (255 = not annotated) along ``axis`` with ITK's
    morphological contour interpolation; same output as
    :func:`~training.interpolation.interpolate_between_slices`.

    The filter takes an empty slice for an unpainted one, so a structure absent from a painted
    slice between two showing it is filled over there; the painted slices are put back as given
    afterwards. Raises ImportError with the install command when the extra is missing.
    """
    if not contour_interpolation_available():
        raise ImportError(INSTALL_HINT)
    import itk

    lab = np.moveaxis(np.asarray(labels), axis, 0)
    painted = sorted({int(z) for z in (_painted(lab) if painted is None else painted)})
    out = np.zeros(lab.shape, np.uint8)
    if not painted:
        return np.moveaxis(out, 0, axis)
    known = np.where(lab == IGNORE_INDEX, 0, lab).astype(np.uint8)
    out[painted] = known[painted]
    interpolator = itk.MorphologicalContourInterpolator.New(itk.image_from_array(out))
    interpolator.SetAxis(lab.ndim - 1)  # ITK counts axes x, y, z: numpy's axis 0 is the last
    interpolator.SetUseExtrapolation(False)
    interpolator.Update()
    out = np.array(itk.array_from_image(interpolator.GetOutput()), np.uint8)
    out[: painted[0]] = 0
    out[painted[-1] + 1:] = 0
    out[painted] = known[painted]
    return np.moveaxis(out, 0, axis)

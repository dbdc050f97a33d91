"""ITK's morphological contour interpolation: 3D Slicer's "Fill between slices", as a baseline.

Albu et al. 2008, from the PyPI package ``itk-morphologicalcontourinterpolation``: an optional
benchmark extra (``pip install napari-semiseg[bench]``), never needed by the plugin or the
engine. Run as Slicer runs it, with two choices made explicit: it interpolates along the
painting axis only, and it does not extrapolate past the outermost painted slices (this
project's interpolation leaves those background too).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from training.interactive.interpolation import painted_slices

#: itk-morphologicalcontourinterpolation 2.1.2 (ITK 5.4) sometimes corrupts the heap: measured,
#: 1 run in 4 on an 11 x 32 x 32 cone aborted at exit with "malloc_consolidate(): unaligned
#: fastbin chunk detected", with its default settings too. :class:`ContourInterpolator` keeps it
#: in a child process of its own.
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
    :func:`~training.interactive.interpolation.interpolate_between_slices`.

    The filter takes an empty slice for an unpainted one, so a structure absent from a painted
    slice between two showing it is filled over there; the painted slices are put back as given
    afterwards. Raises ImportError with the install command when the extra is missing.
    """
    if not contour_interpolation_available():
        raise ImportError(INSTALL_HINT)
    import itk

    lab, painted, known = painted_slices(labels, painted, axis)
    out = np.zeros(lab.shape, np.uint8)
    if not painted:
        return np.moveaxis(out, 0, axis)
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


def _load_itk(threads: int | None) -> None:
    import itk

    if threads:
        itk.set_nthreads(threads)
    itk.MorphologicalContourInterpolator  # noqa: B018 (ITK loads its modules on first use)


class ContourInterpolator:
    """:func:`morphological_contour_interpolation` in one spawned child process, which loads ITK
    once (about 20 s) and whose crashes cannot take the caller down. Use as a context manager.
    """

    def __init__(self, threads: int | None = None) -> None:
        if not contour_interpolation_available():
            raise ImportError(INSTALL_HINT)
        self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                         initializer=_load_itk, initargs=(threads,))
        self._pool.submit(int).result()  # ITK loaded before any call is timed

    def __call__(self, labels: np.ndarray, painted: Sequence[int] | None = None, axis: int = 0
                 ) -> np.ndarray:
        return self._pool.submit(morphological_contour_interpolation, labels,
                                 None if painted is None else list(painted), axis).result()

    def __enter__(self) -> ContourInterpolator:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

"""napari reader: scans and label maps with their geometry (npe2 `napari_get_reader`).

DICOM: a folder of several series asks which one to open (description and size); a DICOM-SEG
opens onto its series, which must be open already, as a Labels layer with the segments' names
and colours; any other DICOM file opens the whole series it belongs to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.core.dicom import (
    SeriesInfo,
    file_series,
    is_seg_file,
    list_series,
    looks_dicom,
    series_listing,
)

from .io import (
    VOLUME_SUFFIXES,
    Geometry,
    TimeSeriesError,
    Volume,
    VolumeReadError,
    case_name,
    check_labels_fit,
    has_suffix,
    one_value_note,
    png_slices,
    read_volume,
)


def napari_get_reader(path):
    """A reader for files and folders this plugin handles, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        # A DICOM series or a folder of PNG slices; an empty folder is accepted so the user
        # hears why it cannot be opened instead of "no reader".
        files = [f for f in p.iterdir() if f.is_file()]
        if png_slices(p) or not files or any(_maybe_dicom(f) for f in files):
            return read_layers
        return None
    if has_suffix(p, VOLUME_SUFFIXES + (".png",)):
        return read_layers
    if p.is_file() and looks_dicom(p):
        return read_dicom_file
    return None


def _maybe_dicom(f: Path) -> bool:
    return f.suffix.lower() in (".dcm", ".ima", "") or f.name.upper() == "DICOMDIR"


def scan_axis_labels(ndim: int) -> tuple[str, ...] | None:
    """The scan's own axes under the slider, not napari's default "-3, -2, -1"; 3-D only."""
    return ("z", "y", "x") if ndim == 3 else None


def volume_layer_data(vol: Volume) -> tuple:
    """A napari LayerData tuple for a read volume; geometry travels in the metadata."""
    from .colors import label_colormap

    ndim = vol.data.ndim - (1 if vol.rgb else 0)
    geom = vol.geometry
    kwargs = {
        "name": scan_name(vol),
        "scale": geom.scale[-ndim:],
        "translate": geom.translate[-ndim:],
        "metadata": {"geometry": geom.to_dict()},
    }
    if (names := scan_axis_labels(ndim)) is not None:
        kwargs["axis_labels"] = names
    if "dicom_series" in vol.extra:  # which series: a DICOM-SEG opened later finds it by this
        kwargs["metadata"]["dicom_series"] = vol.extra["dicom_series"]
    if vol.is_labels:
        kwargs["colormap"] = label_colormap()
        return (vol.data, kwargs, "labels")
    kwargs["rgb"] = vol.rgb
    if not vol.rgb:
        kwargs["contrast_limits"] = display_range(vol.data)
    return (vol.data, kwargs, "image")


# folder names that say what a folder holds, not which scan: a PNG stack laid out as
# <patient>/images and <patient>/masks opened as two layers called "images" and "masks"
GENERIC_FOLDERS = {"images", "image", "imgs", "slices", "png", "pngs", "dicom", "dcm", "series",
                   "masks", "mask", "labels", "label", "segmentation", "segmentations"}


def scan_name(vol: Volume) -> str:
    """The layer name of a read scan: its case name, with the parent folder's in front where
    the scan is a folder with a generic name ("TCGA_CS_4941_19960909 images")."""
    source = Path(vol.geometry.source) if vol.geometry.source else None
    if (source is not None and source.name.lower() in GENERIC_FOLDERS and source.parent.name
            and source.is_dir()):
        return f"{source.parent.name} {source.name}"
    return vol.name


def display_range(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The grey range a scan opens with: its ``low`` to ``high`` percentiles, as viewers such as
    ITK-SNAP window a new image. napari's own fit spans minimum to maximum, and a few bright
    voxels (fat, flow, a marker) then leave the anatomy dark: on the left-atrium sample the
    99.5th percentile is 33 where the maximum is 65. Read off at most about a million voxels."""
    flat = np.asarray(data).reshape(-1)
    flat = flat[:: max(1, flat.size // 1_000_000)]
    lo, hi = (float(v) for v in np.percentile(flat, [low, high]))
    if hi <= lo:  # nearly constant: fall back to the full range
        lo, hi = float(flat.min()), float(flat.max())
    return lo, hi if hi > lo else lo + 1.0


def read_layers(path, series: str | None = None) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    if series is None and p.is_dir() and not png_slices(p):
        found = list_series(p)
        if len(found) > 1:
            chosen = choose_series(p, found)
            if chosen is None:
                raise VolumeReadError(f"{p}: not opened, no series chosen (the folder holds "
                                      f"{len(found)}: {series_listing(found)})")
            series = chosen.uid
    try:
        vol = read_volume(path, series=series)
    except TimeSeriesError as e:  # a cine: one time point is one scan to segment
        time_point = choose_time_point(p, e)
        if time_point is None:
            raise VolumeReadError(f"{p}: not opened, no time point chosen (the series has "
                                  f"{e.time_points})") from None
        vol = read_volume(path, series=series, time_point=time_point)
    if vol.is_labels:
        _check_against_open_images(vol)
    note = vol.extra.get("not_labels")  # the user expected labels: say why this is an image
    if note is None and not vol.is_labels and (blank := one_value_note(vol.data)):
        note = f"{p.name}: {blank}"
    if note:
        from napari.utils.notifications import show_warning

        show_warning(note)
    return [volume_layer_data(vol)]


def choose_series(folder: Path, series: list[SeriesInfo]) -> SeriesInfo | None:
    """Ask which series of ``folder`` to open, by description and size; None if cancelled.

    Without a running Qt application (a script, a test) there is no one to ask: the folder
    is refused with the series listed, as the command line does.
    """
    from qtpy.QtWidgets import QApplication, QInputDialog

    if QApplication.instance() is None:
        raise VolumeReadError(f"{folder}: folder holds {len(series)} DICOM series; choose "
                              f"one: {series_listing(series)}")
    items = [s.label() for s in series]
    item, ok = QInputDialog.getItem(QApplication.activeWindow(), "Open DICOM series",
                                    f"{folder.name} holds {len(series)} series. Open:",
                                    items, 0, False)
    return series[items.index(item)] if ok and item in items else None


def choose_time_point(path: Path, error: TimeSeriesError) -> int | None:
    """Ask which time point (from 1) of a 4-D scan to open; None if cancelled. Without a
    running Qt application there is no one to ask: the scan is refused, saying why."""
    from qtpy.QtWidgets import QApplication, QInputDialog

    if QApplication.instance() is None:
        raise error
    value, ok = QInputDialog.getInt(
        QApplication.activeWindow(), "Open a time point",
        f"{path.name} is a time series of {error.time_points} time points; napari-semiseg "
        f"segments one at a time. Open time point:", 1, 1, error.time_points, 1)
    return int(value) if ok else None


def read_dicom_file(path) -> list[tuple]:
    """A DICOM-SEG onto its open series; any other DICOM file: its whole series."""
    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    if is_seg_file(p):
        return [seg_layer_data(p)]
    try:
        series = file_series(p)
    except ValueError as e:
        raise VolumeReadError(str(e)) from e
    return read_layers(str(p.parent), series=series or None)


def seg_layer_data(path: Path) -> tuple:
    """A DICOM-SEG as a Labels layer on the open image of the series it references."""
    from training.core.dicom_seg import find_series, read_seg, referenced_series

    from .colors import label_colormap

    refs = referenced_series(path)
    candidates = []
    for layer, geom in _open_dicom_images():
        uid = layer.metadata.get("dicom_series")
        if uid is None:  # an image not opened by this reader (a reopened session): look it up
            try:
                uid = find_series(geom.source, layer.data.shape, geom).uid
            except ValueError:
                continue
        if not refs or uid in refs:
            candidates.append((layer, geom, uid))
    if not candidates:
        raise VolumeReadError(f"{path}: this DICOM-SEG lies on series {', '.join(refs) or '?'}, "
                              f"which is not open: open that series first (File > Open its "
                              f"folder), then the DICOM-SEG")
    layer, geom, uid = candidates[-1]
    seg = read_seg(path, layer.data.shape, geom, series_uid=uid)
    names = seg.names()
    cmap = label_colormap({s.value: s.color for s in seg.segments})  # the SEG's own colours
    return (seg.data, {
        "name": seg.description or case_name(path),
        "scale": tuple(layer.scale), "translate": tuple(layer.translate),
        "metadata": {"geometry": geom.to_dict(), "dicom_series": uid},
        "features": {"index": list(range(len(names))), "name": names},
        "colormap": cmap,
    }, "labels")


def _open_dicom_images():
    """(layer, geometry) of the open grey images read from a DICOM series folder."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # no Qt / no viewer
        return []
    if viewer is None:
        return []
    out = []
    for ly in viewer.layers:
        g = ly.metadata.get("geometry") if isinstance(ly, Image) and not ly.rgb else None
        if g and Path(g.get("source", "")).is_dir():
            out.append((ly, Geometry.from_dict(g)))
    return out


def _check_against_open_images(vol: Volume) -> None:
    """A label map opened onto a scan of another shape is refused with both shapes named."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # no Qt / no viewer: nothing to compare against
        return
    if viewer is None:
        return
    images = [ly for ly in viewer.layers if isinstance(ly, Image) and not ly.rgb]
    same_ndim = [ly for ly in images if ly.data.ndim == vol.data.ndim]
    if same_ndim and all(ly.data.shape != vol.data.shape for ly in same_ndim):
        ref = same_ndim[-1]
        check_labels_fit(vol.data.shape, ref.data.shape, f"label map {vol.name!r}",
                         f"open image {ref.name!r}")

"""napari reader: scans and label maps with their geometry (npe2 `napari_get_reader`)."""

from __future__ import annotations

from pathlib import Path

from .io import (
    VOLUME_SUFFIXES,
    Volume,
    check_labels_fit,
    has_suffix,
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
    return None


def _maybe_dicom(f: Path) -> bool:
    return f.suffix.lower() in (".dcm", ".ima", "") or f.name.upper() == "DICOMDIR"


def volume_layer_data(vol: Volume) -> tuple:
    """A napari LayerData tuple for a read volume; geometry travels in the metadata."""
    from .colors import label_colormap

    ndim = vol.data.ndim - (1 if vol.rgb else 0)
    geom = vol.geometry
    kwargs = {
        "name": vol.name,
        "scale": geom.scale[-ndim:],
        "translate": geom.translate[-ndim:],
        "metadata": {"geometry": geom.to_dict()},
    }
    if vol.is_labels:
        kwargs["colormap"] = label_colormap()
        return (vol.data, kwargs, "labels")
    kwargs["rgb"] = vol.rgb
    return (vol.data, kwargs, "image")


def read_layers(path) -> list[tuple]:
    if isinstance(path, list):
        path = path[0]
    vol = read_volume(path)
    if vol.is_labels:
        _check_against_open_images(vol)
    if vol.extra.get("not_labels"):  # the user expected labels: say why this is an image
        from napari.utils.notifications import show_warning

        show_warning(vol.extra["not_labels"])
    return [volume_layer_data(vol)]


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

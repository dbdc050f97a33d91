"""One colour per class, and a distinct grey hatch-like tint for "not annotated" (255)."""

from __future__ import annotations

from napari.utils.colormaps import DirectLabelColormap

from training.core.palette import CLASS_COLORS, class_color

from .io import NOT_ANNOTATED

__all__ = ["CLASS_COLORS", "class_color", "label_colormap"]

NOT_ANNOTATED_COLOR = [0.75, 0.75, 0.75, 0.35]


def label_colormap(overrides: dict[int, str] | None = None) -> DirectLabelColormap:
    """Colormap for prediction and label layers: classes coloured, 255 a faint grey veil.
    ``overrides``: value -> colour where a file recommends its own (a DICOM-SEG's segments)."""
    colors: dict = {None: "#ffffff", 0: "transparent", NOT_ANNOTATED: NOT_ANNOTATED_COLOR}
    colors.update({k: class_color(k) for k in range(1, NOT_ANNOTATED)})
    colors.update({k: c for k, c in (overrides or {}).items() if 0 < k < NOT_ANNOTATED})
    return DirectLabelColormap(color_dict=colors)

"""One colour per class, and a distinct grey hatch-like tint for "not annotated" (255)."""

from __future__ import annotations

from napari.utils.colormaps import DirectLabelColormap

from .io import NOT_ANNOTATED

CLASS_COLORS = {
    1: "#ff4040",  # ACDC RV / first foreground class
    2: "#40d040",  # Myo
    3: "#4080ff",  # LV
    4: "#ffd020",
    5: "#d040ff",
    6: "#20e0e0",
    7: "#ff9020",
    8: "#a0ff60",
}
NOT_ANNOTATED_COLOR = [0.75, 0.75, 0.75, 0.35]


def label_colormap() -> DirectLabelColormap:
    """Colormap for prediction and label layers: classes coloured, 255 a faint grey veil."""
    colors: dict = {None: "#ffffff", 0: "transparent", NOT_ANNOTATED: NOT_ANNOTATED_COLOR}
    colors.update(CLASS_COLORS)
    return DirectLabelColormap(color_dict=colors)

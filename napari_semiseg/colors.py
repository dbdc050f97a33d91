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


def class_color(value: int) -> str:
    """The colour of label ``value`` (1..254): the fixed ones first, then hues spread by the
    golden angle so that neighbouring new structures never look alike."""
    if value in CLASS_COLORS:
        return CLASS_COLORS[value]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.75, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def label_colormap() -> DirectLabelColormap:
    """Colormap for prediction and label layers: classes coloured, 255 a faint grey veil."""
    colors: dict = {None: "#ffffff", 0: "transparent", NOT_ANNOTATED: NOT_ANNOTATED_COLOR}
    colors.update({k: class_color(k) for k in range(1, NOT_ANNOTATED)})
    return DirectLabelColormap(color_dict=colors)

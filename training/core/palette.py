"""One colour per label value, shared by the plugin's layers and the model cards."""

from __future__ import annotations

import colorsys

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


def class_color(value: int) -> str:
    """The colour of label ``value`` (1..254): the fixed ones first, then hues spread by the
    golden angle so that neighbouring new structures never look alike."""
    if value == 0:
        return "#000000"
    if value in CLASS_COLORS:
        return CLASS_COLORS[value]
    r, g, b = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.75, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"

"""The model the assistant starts from: a small 2-D U-Net this project trained on ACDC.

How it was made (command, data, test Dice) is recorded in the README, section "Shipped model".
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "acdc_unet2d.pt"


def default_model_available() -> bool:
    return DEFAULT_MODEL.is_file()

"""The model the assistant starts from: a small 2-D U-Net this project trained on ACDC.

How it was made (command, data, test Dice) is recorded in the README, section "Shipped model".
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "acdc_unet2d.pt"


def default_model_available() -> bool:
    return DEFAULT_MODEL.is_file()


# A New model's network starts from this one, which learnt cardiac MRI's RV, Myo and LV with labels
# (``semiseg train --new-model-network``, command in docs/models.md), its output layer new;
# from random weights when it is not shipped.
NEW_MODEL_START = Path(__file__).resolve().parent / "models" / "pretrained" / "new_model_unet2d.pt"


def new_model_start() -> Path | None:
    return NEW_MODEL_START if NEW_MODEL_START.is_file() else None

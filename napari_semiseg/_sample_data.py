"""File > Open Sample: small real scans shipped in `sample_data/` (see its README for origins)."""

from __future__ import annotations

from pathlib import Path

from ._reader import volume_layer_data
from .io import read_volume


def sample_dir() -> Path:
    """`sample_data/` of a source checkout; an installed copy may point at it by env var."""
    import os

    env = os.environ.get("NAPARI_SEMISEG_SAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "sample_data"


def _layers(*relpaths: str) -> list[tuple]:
    root = sample_dir()
    missing = [r for r in relpaths if not (root / r).exists()]
    if missing:
        raise FileNotFoundError(
            f"sample data not found under {root}: {', '.join(missing)}. Run from a source "
            f"checkout or set NAPARI_SEMISEG_SAMPLES to its sample_data folder."
        )
    return [volume_layer_data(read_volume(root / r)) for r in relpaths]


SAMPLES = {
    "acdc": ("acdc/patient001_frame01.nii.gz", "acdc/patient001_frame01_labels.nii.gz"),
    "left_atrium": (
        "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz",
        "left_atrium/UPT6DX9IQY9JAZ7HJKA7_labels.nii.gz",
    ),
    "lgg": ("lgg/TCGA_CS_4941_19960909/images", "lgg/TCGA_CS_4941_19960909/masks"),
}


def acdc_sample() -> list[tuple]:
    return _layers(*SAMPLES["acdc"])


def left_atrium_sample() -> list[tuple]:
    return _layers(*SAMPLES["left_atrium"])


def lgg_sample() -> list[tuple]:
    return _layers(*SAMPLES["lgg"])

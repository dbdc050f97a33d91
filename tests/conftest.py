"""Shared fixtures: small synthetic scans with non-trivial geometry, made with SimpleITK."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"


def rotated_direction(degrees: float = 30.0) -> tuple[float, ...]:
    """A rotation about z then x: a direction no axis-aligned writer can fake."""
    a, b = math.radians(degrees), math.radians(degrees / 2)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel().tolist())


@pytest.fixture
def disc_scan() -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) = (6, 32, 40) scan with a bright disc and its label."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:6, 0:32, 0:40]
    label = ((y - 16) ** 2 + (x - 20) ** 2 < 64).astype(np.uint8)
    image = (100 + 400 * label.astype(np.int16) + rng.normal(0, 20, label.shape)).astype(np.int16)
    return image, label


def write_dicom_series(folder: Path, image: np.ndarray, spacing=(0.7, 0.8, 2.5),
                       origin=(10.0, -20.0, 30.0), direction=None, uid: str = "",
                       description: str = "T1 AX", number: int = 3,
                       depths: list[float] | None = None) -> list[Path]:
    """Write (z, y, x) ``image`` as a DICOM series, one file per slice (SimpleITK/GDCM).

    ``direction``: SimpleITK's 3x3 (x, y, z) direction; its first two columns become the
    slices' orientation, the third (the normal) where slice k lies: ``depths[k]`` mm from
    ``origin`` (default k * spacing[2]). Every tag a DICOM-SEG needs is there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or "1.2.826.0.1.3680043.2.1125.1.99999"
    d = np.reshape(direction if direction is not None else np.eye(3).ravel(), (3, 3))
    depths = depths if depths is not None else [k * spacing[2] for k in range(image.shape[0])]
    files = []
    for k, depth in enumerate(depths):
        sl = sitk.GetImageFromArray(image[k])
        sl.SetSpacing(spacing[:2])
        pos = np.asarray(origin) + depth * d[:, 2]
        tags = {
            "0008|0060": "MR",
            "0008|103e": description,
            "0020|000d": uid + ".1",
            "0020|000e": uid + ".2",
            "0020|0052": uid + ".3",  # frame of reference
            "0020|0011": str(number),
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        files.append(folder / f"{uid.rsplit('.', 1)[-1]}_slice{k:03d}.dcm")
        w.SetFileName(str(files[-1]))
        w.Execute(sl)
    return files


@pytest.fixture
def dicom_folder(tmp_path: Path, disc_scan) -> Path:
    """A real DICOM series, one file per slice, with position tags SimpleITK orders by."""
    image, _ = disc_scan
    folder = tmp_path / "dicom_series"
    write_dicom_series(folder, image)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny U-Net (base 4) trained for 3 steps on the ACDC sample, downsampled."""
    from napari_semiseg.io import read_volume
    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, train

    vol = read_volume(SAMPLES / "acdc/patient001_frame01.nii.gz")
    lab = read_volume(SAMPLES / "acdc/patient001_frame01_labels.nii.gz").data
    data = TrainData.from_arrays([vol.data[:, ::2, ::2]], [lab[:, ::2, ::2]], num_classes=4)
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    cfg = TrainConfig(method="supervised", steps=3, size=[48, 48], base=4, depth=3,
                      dropout=0.1, labeled_bs=2, unlabeled_bs=0, checkpoint=str(out),
                      device="cpu")
    return train(cfg, data)


@pytest.fixture
def disc_model(tmp_path) -> str:
    """A tiny untrained 2-D U-Net (base 4) of two classes, background and disc, on 32 px."""
    import torch

    from training.engine.checkpoint import save_checkpoint
    from training.engine.networks import UNet

    torch.manual_seed(0)
    meta = {"num_classes": 2, "class_names": ["background", "disc"], "dims": 2,
            "size": [32, 32],
            "normalization": {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}}
    return save_checkpoint(tmp_path / "disc.pt", UNet(2, 1, 2, base=4, depth=2, dropout=0.1),
                           meta)


LGG_SAMPLE = SAMPLES / "lgg/TCGA_CS_4941_19960909"


def train_tiny_lgg(tmp_path_factory, channels: int) -> str:
    """A 2-class U-Net (base 4) trained for 2 steps on the LGG sample, a quarter of its
    pixels: on its FLAIR channel (``channels=1``) or on all three (``channels=3``)."""
    from napari_semiseg.io import read_volume
    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, train

    img = read_volume(LGG_SAMPLE / "images").data
    img = img[..., 1] if channels == 1 else img
    lab = read_volume(LGG_SAMPLE / "masks", as_labels=True).data
    data = TrainData.from_arrays([img[:, ::4, ::4]], [lab[:, ::4, ::4]], num_classes=2)
    out = tmp_path_factory.mktemp("model") / f"tiny_{channels}ch.pt"
    cfg = TrainConfig(method="supervised", steps=2, size=[32, 32], base=4, depth=2,
                      labeled_bs=2, unlabeled_bs=0, checkpoint=str(out), device="cpu")
    return train(cfg, data)


@pytest.fixture
def assistant(make_napari_viewer, tiny_model, tmp_path, monkeypatch):
    """The assistant docked on the ACDC sample with the tiny model chosen: (viewer, widget)."""
    from napari_semiseg._widget import AssistantWidget

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "acdc/patient001_frame01.nii.gz"), plugin="napari-semiseg")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny_model)
    yield viewer, widget
    widget.bridge.close()


def key_binding(viewer, key: str):
    """The keymap entry napari stored for ``key`` (it normalises the key's spelling), or None."""
    from app_model.types import KeyBinding

    wanted = KeyBinding.from_str(key.replace("-", "+"))
    return next((k for k in viewer.keymap if k == wanted or str(k) == str(wanted)), None)

"""semiseg train --tags, predict --cam, benchmark weak (tiny networks, a few steps)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from test_training_synth import write_dataset

from training.checkpoint import load_checkpoint
from training.cli import main
from training.tags import write_tags
from training.weak import classifier_path

TINY = ["--size", "16", "16", "--base", "4", "--depth", "2", "--labeled-bs", "2",
        "--device", "cpu"]


def test_train_from_tags_then_predict_with_cam(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=3)
    tags = tmp_path / "tags.csv"
    write_tags(tags, {("case00", 0): 1, ("case00", 1): 1, ("case01", 0): 0, ("case01", 1): 0})
    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(data), "--tags", str(tags), "--steps", "3",
                 "--classifier-steps", "2", "--out", str(model), *TINY]) == 0
    err = capsys.readouterr().err
    assert "tags: 2 positive, 2 negative" in err and "classifier" in err
    assert load_checkpoint(model)[1]["method"] == "cam_weak"
    assert classifier_path(model).is_file()
    src = data / "images" / "case02.nii.gz"
    for name in ("cam.nii.gz", "gradcam.nii.gz"):
        if name == "gradcam.nii.gz":
            classifier_path(model).unlink()  # no classifier: Grad-CAM of the segmentation net
        out = tmp_path / name
        assert main(["predict", "--model", str(model), "--input", str(src), "--output",
                     str(tmp_path / "pred.nii.gz"), "--cam", str(out), "--device", "cpu"]) == 0
        cam = sitk.ReadImage(str(out))
        assert cam.GetSize() == sitk.ReadImage(str(src)).GetSize()
        arr = sitk.GetArrayFromImage(cam)
        assert arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1 + 1e-6


def test_train_needs_labels_or_tags(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=2)
    assert main(["train", "--data", str(data), "--steps", "1", "--out",
                 str(tmp_path / "m.pt"), *TINY]) == 2
    assert "--tags" in capsys.readouterr().err


def _lgg_like(root: Path, patients: int = 4, slices: int = 4) -> Path:
    """RGB PNG slices with a bright FLAIR blob on odd slices, an index.csv like LGG's."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    rows = []
    for p in range(patients):
        for z in range(slices):
            img = rng.integers(20, 60, (32, 32, 3)).astype(np.uint8)
            mask = np.zeros((32, 32), np.uint8)
            if z % 2:
                mask[(yy - 10 - 3 * p) ** 2 + (xx - 16) ** 2 < 20] = 255
                img[..., 1][mask > 0] = 220
            name = f"P{p}_{z + 1:03d}.png"
            sitk.WriteImage(sitk.GetImageFromArray(img, isVector=True), str(root / "images" / name))
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "masks" / name))
            rows.append([f"images/{name}", f"masks/{name}", f"P{p}", z + 1, int(z % 2),
                         int((mask > 0).sum())])
    with open(root / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "patient", "slice", "has_tumor", "tumor_pixels"])
        w.writerows(rows)
    return root


def test_benchmark_weak_writes_a_table(tmp_path, capsys):
    data = _lgg_like(tmp_path / "lgg")
    table = tmp_path / "weak.md"
    assert main(["benchmark", "weak", "--data", str(data), "--test-patients", "1", "--dense",
                 "2", "--classifier-steps", "2", "--steps", "2", "--out", str(tmp_path / "w"),
                 "--table", str(table), *TINY]) == 0
    text = table.read_text(encoding="utf-8")
    assert text.startswith("# Weak supervision") and "Command: `semiseg benchmark weak" in text
    for arm in ("CAM threshold", "random walker", "cam_weak network (tags only)",
                "supervised, 2 dense masks", "ceiling"):
        assert arm in text
    res = json.loads((tmp_path / "w" / "results.json").read_text(encoding="utf-8"))
    assert res["meta"]["test_patients"] == ["P3"]
    r = res["results"]["cam_weak network (tags only)"]
    assert r["n_pos"] == 2 and r["n_neg"] == 2 and 0 <= r["dice"] <= 1

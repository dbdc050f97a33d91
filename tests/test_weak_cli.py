"""semiseg train --tags, predict --cam, benchmark weak (tiny networks, a few steps)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from test_training_synth import write_dataset

from training.cli import main
from training.engine.checkpoint import load_checkpoint
from training.weak.from_tags import classifier_path
from training.weak.tags import write_tags

TINY = ["--size", "16", "16", "--base", "4", "--depth", "2", "--labeled-bs", "2",
        "--device", "cpu"]


def test_train_from_tags_then_predict_with_cam(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=3)
    tags = tmp_path / "tags.csv"
    write_tags(tags, {("case00", 0): 1, ("case00", 1): 1, ("case01", 0): 0, ("case01", 1): 0})
    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(data), "--tags", str(tags), "--steps", "3",
                 "--classifier-steps", "2", "--localiser", "cam", "--out", str(model),
                 *TINY]) == 0
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


def test_train_from_tags_default_uses_the_anomaly_map_everywhere(tmp_path, capsys):
    """The default localiser needs no classifier, and predict --cam shows the same kind of map
    as the weak masks were seeded from."""
    from training.engine.normalization import normalize_intensity
    from training.weak.localise import anomaly_map

    data = write_dataset(tmp_path / "data", n=3)
    tags = tmp_path / "tags.csv"
    write_tags(tags, {("case00", 0): 1, ("case00", 1): 1, ("case01", 0): 0, ("case01", 1): 0})
    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(data), "--tags", str(tags), "--steps", "2",
                 "--out", str(model), *TINY]) == 0
    assert "classifier" not in capsys.readouterr().err and not classifier_path(model).exists()
    meta = load_checkpoint(model)[1]
    assert meta["config"]["method_opts"]["localiser"] == "anomaly"
    src = data / "images" / "case02.nii.gz"
    out = tmp_path / "map.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(src), "--output",
                 str(tmp_path / "pred.nii.gz"), "--cam", str(out), "--device", "cpu"]) == 0
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(src))).astype(np.float32)
    want = anomaly_map(normalize_intensity(vol, meta["normalization"]))
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), want, atol=1e-6)


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
    for arm in ("CAM threshold", "weak masks: anomaly map", "cam_weak network (tags only)",
                "supervised, 2 dense masks", "ceiling", "| anomaly |", "| cam |", "hit rate"):
        assert arm in text
    res = json.loads((tmp_path / "w" / "results.json").read_text(encoding="utf-8"))
    assert [s["test_patients"] for s in res["meta"]["splits"]] == [["P3"]]
    r = res["runs"][0]["cam_weak network (tags only)"]
    assert r["n_pos"] == 2 and r["n_neg"] == 2 and 0 <= r["dice"] <= 1


def test_benchmark_weak_folds_hold_out_every_patient_once(tmp_path):
    data = _lgg_like(tmp_path / "lgg")
    table = tmp_path / "weak.md"
    assert main(["benchmark", "weak", "--data", str(data), "--folds", "2", "--dense", "2",
                 "--classifier-steps", "2", "--steps", "2", "--out", str(tmp_path / "w"),
                 "--table", str(table), *TINY]) == 0
    res = json.loads((tmp_path / "w" / "results.json").read_text(encoding="utf-8"))
    held = [s["test_patients"] for s in res["meta"]["splits"]]
    assert held == [["P0", "P2"], ["P1", "P3"]]
    for split in res["meta"]["splits"]:  # never trained on a patient it is tested on
        assert not set(split["train_patients"]) & set(split["test_patients"])
    loc = res["localisation"][0]["anomaly"]
    assert loc["n"] == 4 and 0 <= loc["hits"] <= 4  # 2 tumour slices per held-out patient
    assert "mean ± sd over 2 patient folds" in table.read_text(encoding="utf-8")


def test_train_steps_default_to_more_for_tags_than_for_dense_labels():
    from training.cli import TAG_STEPS, build_parser, train_steps

    parser = build_parser()
    dense = parser.parse_args(["train", "--data", "d", "--labeled", "3", "--out", "m.pt"])
    tags = parser.parse_args(["train", "--data", "d", "--tags", "t.csv", "--out", "m.pt"])
    given = parser.parse_args(["train", "--data", "d", "--tags", "t.csv", "--out", "m.pt",
                               "--steps", "30"])
    assert train_steps(dense) == 1000 and train_steps(tags) == TAG_STEPS == 2000
    assert train_steps(given) == 30
    # the benchmarks that share the training options keep their own default
    le = parser.parse_args(["benchmark", "label-efficiency", "--data", "d", "--labeled", "3",
                            "--methods", "bcp",
                            "--out", "x.md"])
    assert le.steps == 1000

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_training_synth import write_dataset

from training.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--size", "16", "16", "--base", "4", "--depth", "2", "--labeled-bs", "2",
        "--device", "cpu"]


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", n=4)


def _train(dataset, out, *extra):
    return main(["train", "--data", str(dataset), "--method", "mean_teacher", "--labeled", "1",
                 "--dims", "2d", "--steps", "3", "--out", str(out), *TINY, *extra])


def test_train_predict_evaluate_keeps_geometry(dataset, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert _train(dataset, model) == 0
    assert "step 3/3" in capsys.readouterr().err
    src = dataset / "images" / "case03.nii.gz"
    out, unc = tmp_path / "pred" / "case03.nii.gz", tmp_path / "unc.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(src), "--output", str(out),
                 "--uncertainty", str(unc), "--device", "cpu"]) == 0
    ref = sitk.ReadImage(str(src))
    for f in (out, unc):
        img = sitk.ReadImage(str(f))
        assert img.GetSize() == ref.GetSize()
        assert np.allclose(img.GetSpacing(), ref.GetSpacing())
        assert np.allclose(img.GetOrigin(), ref.GetOrigin())
        assert np.allclose(img.GetDirection(), ref.GetDirection())
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(unc))).min() >= 0
    # a folder in, a folder out; then evaluate against the labels
    assert main(["predict", "--model", str(model), "--input", str(dataset / "images"),
                 "--output", str(tmp_path / "preds"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "preds").iterdir())) == 4
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--pred", str(tmp_path / "preds"), "--labels",
                 str(dataset / "labels"), "--json", str(report)]) == 0
    res = json.loads(report.read_text())
    assert len(res["cases"]) == 4 and len(res["mean"]["dice"]) == 2
    assert all(0 <= d <= 1 for d in res["mean"]["dice"])


def _error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.startswith("semiseg: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(dataset, tmp_path, capsys):
    out = str(tmp_path / "m.pt")
    base = ["train", "--method", "supervised", "--steps", "1", "--out", out, *TINY]
    assert "not found" in _error(capsys, [*base, "--data", str(tmp_path / "nope"),
                                          "--labeled", "1"])
    assert "empty" in _error(capsys, [*base, "--data", str(dataset), "--labeled", "0"])
    assert "unknown class" in _error(capsys, [*base, "--data", str(dataset), "--labeled", "1",
                                              "--num-classes", "2"])
    assert "unknown case" in _error(capsys, [*base, "--data", str(dataset), "--labeled", "zzz"])
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    assert "checkpoint" in _error(capsys, ["predict", "--model", str(bad), "--input",
                                           str(dataset / "images"), "--output", str(tmp_path)])


def test_label_shape_mismatch_and_missing_file(dataset, tmp_path, capsys):
    lab = sitk.GetImageFromArray(np.zeros((4, 10, 10), np.uint8))
    sitk.WriteImage(lab, str(dataset / "labels" / "case00.nii.gz"))
    out = str(tmp_path / "m.pt")
    argv = ["train", "--data", str(dataset), "--labeled", "1", "--steps", "1", "--out", out,
            *TINY]
    assert "differs" in _error(capsys, argv)
    (dataset / "images" / "case01.nii.gz").unlink()
    assert "missing" in _error(capsys, argv)


def test_python_m_training_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "training", "predict", "--model", str(tmp_path / "none.pt"),
         "--input", str(tmp_path), "--output", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "semiseg: error" in proc.stderr

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
    res = json.loads(report.read_text(encoding="utf-8"))
    assert len(res["cases"]) == 4 and len(res["mean"]["dice"]) == 2
    assert all(0 <= d <= 1 for d in res["mean"]["dice"])
    capsys.readouterr()
    # a scan of one value (a failed export) is predicted, and the user is told
    blank = tmp_path / "blank.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 16, 16), np.float32)), str(blank))
    assert main(["predict", "--model", str(model), "--input", str(blank), "--output",
                 str(tmp_path / "blank_pred.nii.gz"), "--device", "cpu"]) == 0
    assert "blank.nii.gz: predicted (warning: every voxel holds the same value" in (
        capsys.readouterr().err)


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


def test_speed_benchmark_times_an_act_student_against_its_teacher(dataset, tmp_path, capsys):
    model = tmp_path / "act.pt"
    assert main(["train", "--data", str(dataset), "--method", "act", "--labeled", "1",
                 "--dims", "2d", "--steps", "2", "--out", str(model), "--size", "16", "16",
                 "--base", "16", "--depth", "3", "--labeled-bs", "2", "--device", "cpu"]) == 0
    out = tmp_path / "speed.md"
    volume = str(next((dataset / "images").iterdir()))
    assert main(["benchmark", "speed", "--models", str(model), "--volume", volume,
                 "--shape", "6", "24", "24", "--mc", "0", "2", "--repeats", "2",
                 "--batch", "0", "2", "--data", str(dataset), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = {(c[1], c[2]): c for c in (line.split(" | ") for line in text.splitlines()
                                      if line.startswith("| act.pt"))}
    assert set(rows) == {(r, b) for r in ("student", "teacher") for b in ("16 (default)", "2")}
    student, teacher = rows["student", "2"], rows["teacher", "2"]
    assert int(teacher[3].replace(",", "")) > 5 * int(student[3].replace(",", ""))
    assert float(student[7].rstrip("×")) > 0  # speed-up is a measured ratio
    assert 0 <= float(student[6]) <= 100 and 0 <= float(teacher[6]) <= 100  # test Dice


def test_speed_benchmark_refuses_a_2d_image_as_volume(dataset, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert _train(dataset, model) == 0
    capsys.readouterr()
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(png))
    msg = _error(capsys, ["benchmark", "speed", "--models", str(model), "--volume", str(png),
                          "--out", str(tmp_path / "s.md")])
    assert "3-D" in msg


def test_a_card_names_the_clean_up_and_predict_applies_it(dataset, tmp_path, capsys):
    from training.engine.checkpoint import read_checkpoint
    from training.engine.postprocess import keep_main_pieces

    model = tmp_path / "m.pt"
    assert _train(dataset, model, "--steps", "2") == 0
    assert main(["card", "--model", str(model), "--data", str(dataset), "--anatomy", "Blobs",
                 "--modality", "synthetic", "--trained-with", "semiseg train …",
                 "--split-note", "3 train, 1 test", "--postprocess", "per_class",
                 "--postprocess-note", "chosen on val"]) == 0
    meta = read_checkpoint(model)["meta"]
    assert meta["postprocess"] == meta["card"]["postprocess"] == "per_class"
    assert "largest 3-D piece" in capsys.readouterr().out  # the rendered card says so
    src = dataset / "images" / "case03.nii.gz"
    clean, raw = tmp_path / "clean.nii.gz", tmp_path / "raw.nii.gz"
    common = ["predict", "--model", str(model), "--input", str(src), "--device", "cpu"]
    assert main([*common, "--output", str(clean)]) == 0
    assert main([*common, "--output", str(raw), "--no-clean-up"]) == 0
    c, r = (sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in (clean, raw))
    np.testing.assert_array_equal(c, keep_main_pieces(r, "per_class"))
    assert (c != r).any()  # a 2-step network paints many pieces: the clean-up removed some
    with pytest.raises(SystemExit) as refused:  # an unknown clean-up: a clear refusal
        main(["card", "--model", str(model), "--data", str(dataset), "--anatomy", "B",
              "--modality", "s", "--trained-with", "t", "--split-note", "n",
              "--postprocess", "largest"])
    assert refused.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_card_can_choose_its_clean_up_on_val_scans_and_says_how(dataset, tmp_path, capsys):
    from test_training_synth import set_split

    from training.bench.benchmark import evaluate_clean_ups
    from training.engine.checkpoint import read_checkpoint

    model = tmp_path / "m.pt"
    assert _train(dataset, model, "--steps", "2") == 0
    card = ["card", "--model", str(model), "--data", str(dataset), "--anatomy", "Blobs",
            "--modality", "synthetic", "--trained-with", "semiseg train …",
            "--split-note", "2 train, 1 val, 1 test", "--postprocess", "val"]
    capsys.readouterr()
    assert main(card) == 2  # no val split yet: a clear refusal, and the model is untouched
    assert "no labelled cases in split 'val'" in capsys.readouterr().err
    assert "card" not in read_checkpoint(model)["meta"]
    set_split(dataset, 2, "val")
    assert main(card) == 0
    meta = read_checkpoint(model)["meta"]
    val = evaluate_clean_ups(str(model), str(dataset), "val")
    best = max(val, key=lambda m: (sum(val[m]["dice"]), -list(val).index(m)))
    assert meta["postprocess"] == meta["card"]["postprocess"] == best
    assert "chosen on the 1 'val' scans by mean Dice (none " in meta["card"]["postprocess_note"]


def test_a_card_may_choose_whole_slice_windows_for_speed(dataset, tmp_path, capsys):
    """`semiseg card --whole-slice-up-to` stores the factor before measuring; the card's recipe
    line says which windows it was measured with; a factor below 1 is refused."""
    from training.engine.checkpoint import read_checkpoint

    model = tmp_path / "m.pt"
    assert _train(dataset, model, "--steps", "2") == 0
    card = ["card", "--model", str(model), "--data", str(dataset), "--anatomy", "Blobs",
            "--modality", "synthetic", "--trained-with", "t", "--split-note", "n"]
    assert main(card) == 0
    assert "in patch windows" in capsys.readouterr().out
    assert "whole_slice_up_to" not in read_checkpoint(model)["meta"]
    assert main([*card, "--whole-slice-up-to", "1.6"]) == 0
    assert "slices up to 1.6x the patch whole" in capsys.readouterr().out
    assert read_checkpoint(model)["meta"]["whole_slice_up_to"] == 1.6
    assert "at least 1" in _error(capsys, [*card, "--whole-slice-up-to", "0.5"])


def test_train_records_precision_and_fast_kernels(dataset, tmp_path):
    from training.engine.checkpoint import read_checkpoint

    model = tmp_path / "m.pt"
    assert _train(dataset, model, "--precision", "bf16", "--fast-kernels") == 0
    config = read_checkpoint(model)["meta"]["config"]
    assert config["precision"] == "bf16" and config["deterministic"] is False
    with pytest.raises(SystemExit):  # argparse refuses a precision it does not know
        _train(dataset, tmp_path / "n.pt", "--precision", "fp16")


def test_a_folder_of_png_slices_is_predicted_as_one_stack(dataset, tmp_path):
    """As the dock opens it: one scan, normalised as a whole, written as one volume."""
    from training.core.io import read_image, read_labels
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume

    model = tmp_path / "m.pt"
    _train(dataset, model)
    rng = np.random.default_rng(0)
    slices = tmp_path / "patient" / "images"
    slices.mkdir(parents=True)
    stack = []
    for k in range(3):  # each slice with its own brightness: normalising alone would hide it
        grey = (40 * k + rng.normal(100, 20, (32, 32))).clip(0, 255).astype(np.uint8)
        stack.append(grey)
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey] * 3, -1), isVector=True),
                        str(slices / f"p_{k + 1:03d}.png"))
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(slices),
                 "--output", str(out)]) == 0
    labels, _ = read_labels(out)
    assert labels.shape == (3, 32, 32)
    net, meta = load_checkpoint(model)
    image, _ = read_image(slices)
    expected = predict_volume(net, meta, image, device="cpu", probabilities=False)["labels"]
    assert np.array_equal(labels, expected)


def test_a_folder_of_patients_png_folders_gives_one_volume_each(dataset, tmp_path):
    """A folder holding each patient's slice folder is several scans, named by patient."""
    from training.core.io import read_labels

    model = tmp_path / "m.pt"
    _train(dataset, model)
    rng = np.random.default_rng(1)
    for patient, n in (("alice", 3), ("bob", 2)):
        folder = tmp_path / "patients" / patient
        folder.mkdir(parents=True)
        for k in range(n):
            grey = rng.normal(100, 20, (32, 32)).clip(0, 255).astype(np.uint8)
            sitk.WriteImage(sitk.GetImageFromArray(grey), str(folder / f"{patient}_{k + 1}.png"))
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--input", str(tmp_path / "patients"),
                 "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alice.nii.gz", "bob.nii.gz"]
    assert read_labels(out / "alice.nii.gz")[0].shape == (3, 32, 32)
    assert read_labels(out / "bob.nii.gz")[0].shape == (2, 32, 32)


def test_prior_init_is_on_for_training_from_scratch_and_off_for_weak_labels_unless_asked():
    from training.cli import _config, _prior_init, build_parser

    def parsed(*extra):
        return build_parser().parse_args(["train", "--data", "d", "--out", "m.pt",
                                          "--labeled", "2", *extra])

    assert _config(parsed()).prior_init is True
    assert _config(parsed("--prior-init", "0")).prior_init is False
    # the weak path (--tags) asks for default 0: equal odds unless the command says 1
    assert _prior_init(parsed(), default=0) is False
    assert _prior_init(parsed("--prior-init", "1"), default=0) is True


def test_unlabelled_scans_are_the_ones_named_and_none_are_read_without_an_unlabelled_batch(
        dataset, tmp_path, capsys):
    # case02 is the one unlabelled train case by default; a corrupt file there shows whether
    # a run reads it
    (dataset / "images" / "case02.nii.gz").write_bytes(b"not a nifti file")
    assert _train(dataset, tmp_path / "a.pt") != 0  # mean teacher reads its unlabelled pool
    assert "case02" in capsys.readouterr().err
    assert _train(dataset, tmp_path / "b.pt", "--unlabeled-bs", "0") == 0
    assert _train(dataset, tmp_path / "c.pt", "--unlabeled", "case03") == 0
    assert _train(dataset, tmp_path / "d.pt", "--unlabeled", "case01") != 0  # it is labelled
    assert "both labelled and unlabelled" in capsys.readouterr().err


def test_predict_segments_one_time_point_of_a_cine(dataset, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert _train(dataset, model) == 0
    scan = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "images" / "case03.nii.gz")))
    cine = np.stack([scan, scan[:, ::-1], scan])  # three time points, the second mirrored
    img = sitk.GetImageFromArray(cine.astype(np.float32), isVector=False)
    img.SetSpacing((0.8, 0.8, 3.0, 25.0))
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(img, str(path))
    capsys.readouterr()
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(path), "--output",
                          str(tmp_path / "out.nii.gz"), "--device", "cpu"])
    assert "time series of 3 time points" in err and "--time-point N" in err
    assert not (tmp_path / "out.nii.gz").exists()
    outs = []
    for t in (1, 2):
        out = tmp_path / f"t{t}.nii.gz"
        assert main(["predict", "--model", str(model), "--input", str(path), "--output",
                     str(out), "--time-point", str(t), "--device", "cpu"]) == 0
        written = sitk.ReadImage(str(out))
        assert written.GetDimension() == 3 and written.GetSize() == img.GetSize()[:3]
        assert np.allclose(written.GetSpacing(), (0.8, 0.8, 3.0))
        outs.append(sitk.GetArrayFromImage(written))
    # time point 1 is the scan itself: segmented as the scan alone is
    alone = tmp_path / "alone.nii.gz"
    assert main(["predict", "--model", str(model), "--input",
                 str(dataset / "images" / "case03.nii.gz"), "--output", str(alone),
                 "--device", "cpu"]) == 0
    np.testing.assert_array_equal(outs[0], sitk.GetArrayFromImage(sitk.ReadImage(str(alone))))
    assert not np.array_equal(outs[1], outs[0])  # and time point 2 is another image

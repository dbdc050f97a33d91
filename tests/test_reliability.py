"""Issue 9: no silent wrong data and no lost work, through every entry point (no display).

Each test reproduces one case a hostile tester found: a full disk, truncated or NaN NIfTI, label
values out of range, two windows on one scan, gzip garbage, a misfit uncertainty map, a broken
PNG folder, grey+alpha PNGs, a loss that turns NaN.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_training_synth import write_dataset

from napari_semiseg.folder_lock import FolderLockedError
from napari_semiseg.session import Session, default_folder
from training.cli import main
from training.core.io import (
    Geometry,
    LabelShapeError,
    VolumeReadError,
    WriteError,
    read_image,
    read_labels,
    read_volume,
    write_volume,
)

TINY = ["--size", "16", "16", "--base", "4", "--depth", "2", "--labeled-bs", "2",
        "--device", "cpu"]


def _cli_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("semiseg: error:")
    return err


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", n=4)


@pytest.fixture
def model(dataset, tmp_path):
    out = tmp_path / "m.pt"
    assert main(["train", "--data", str(dataset), "--labeled", "2", "--dims", "2d",
                 "--steps", "2", "--out", str(out), *TINY]) == 0
    return out


def _nifti(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _truncate_gz(src: Path, dst: Path, keep: float = 0.5) -> Path:
    raw = gzip.decompress(src.read_bytes())
    dst.write_bytes(gzip.compress(raw[: int(len(raw) * keep)]))
    return dst


# ----- 2. truncated NIfTI: refused by predict, train and evaluate --------------------------------


def test_truncated_nifti_is_refused_by_every_cli_command(dataset, model, tmp_path, capsys):
    bad = _truncate_gz(dataset / "images" / "case02.nii.gz", tmp_path / "half.nii.gz")
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(bad),
                              "--output", str(tmp_path / "out.nii.gz"), "--device", "cpu"])
    assert "half.nii.gz" in err and "truncated" in err
    assert not (tmp_path / "out.nii.gz").exists()
    # the same truncation inside a training folder
    shutil.copy(bad, dataset / "images" / "case00.nii.gz")
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--out", str(tmp_path / "t.pt"), *TINY])
    assert "case00.nii.gz" in err and "truncated" in err
    assert not (tmp_path / "t.pt").exists()
    # and a truncated label file given to evaluate
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(dataset / "labels" / "case01.nii.gz", preds / "case01.nii.gz")
    labels = tmp_path / "labels"
    labels.mkdir()
    _truncate_gz(dataset / "labels" / "case01.nii.gz", labels / "case01.nii.gz")
    err = _cli_error(capsys, ["evaluate", "--pred", str(preds), "--labels", str(labels)])
    assert "case01.nii.gz" in err and "truncated" in err


# ----- 3. NaN / Inf ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_in_every_format(tmp_path, suffix, bad):
    a = np.ones((3, 8, 9), np.float32)
    a[1, 2, 3] = bad
    path = _nifti(tmp_path / f"scan{suffix}", a)
    with pytest.raises(VolumeReadError, match="1 voxels are NaN or Inf") as e:
        read_volume(path)
    assert f"scan{suffix}" in str(e.value)


def test_simpleitk_really_hides_nifti_nan(tmp_path):
    """Why the raw check exists: SimpleITK alone reads this NaN voxel as a number."""
    a = np.ones((2, 4, 4), np.float32)
    a[0, 0, 0] = np.nan
    path = _nifti(tmp_path / "n.nii.gz", a)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()
    with pytest.raises(VolumeReadError):
        read_image(path)


def test_nan_scan_in_training_folder_and_predict(dataset, model, tmp_path, capsys):
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "images" / "case03.nii.gz")))
    a = a.astype(np.float32)
    a[0, 0, 0] = np.nan
    nan_scan = _nifti(tmp_path / "nan.nrrd", a)
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(nan_scan),
                              "--output", str(tmp_path / "o.nii.gz"), "--device", "cpu"])
    assert "nan.nrrd" in err and "NaN" in err
    _nifti(dataset / "images" / "case01.nii.gz", a)  # a train case
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--out", str(tmp_path / "t.pt"), *TINY])
    assert "case01.nii.gz" in err and "NaN" in err


def test_a_loss_that_turns_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    import torch

    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, TrainingDiverged, train
    from training.methods.base import Method

    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 16, 16)).astype(np.float32)
    labels = (image > 0).astype(np.uint8)
    data = TrainData.from_arrays([image], [labels])
    out = tmp_path / "m.pt"
    real_step = Method.step

    def poisoned(self, labeled, unlabeled, step, total):
        if step < 3:
            return real_step(self, labeled, unlabeled, step, total)
        for p in self.main().parameters():  # what a diverging run leaves behind
            p.data.fill_(float("nan"))
        return {"sup": float("nan"), "loss": float("nan")}

    cfg = TrainConfig(steps=6, size=[16, 16], labeled_bs=2, unlabeled_bs=0, base=4, depth=2,
                      device="cpu", checkpoint=str(out), checkpoint_every=2)
    Method.step = poisoned
    try:
        with pytest.raises(TrainingDiverged, match="step 4.*sup=nan.*last good checkpoint"):
            train(cfg, data)
    finally:
        Method.step = real_step
    payload = torch.load(out, weights_only=True)
    assert payload["meta"]["steps_done"] == 2
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values()
               if v.is_floating_point())


# ----- 4. label values ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, -3, 256, 300])
def test_label_values_outside_0_255_are_refused_naming_file_and_value(tmp_path, value):
    lab = np.zeros((2, 5, 5), np.int16)
    lab[1, 2, 3] = value
    path = _nifti(tmp_path / "labels.nii.gz", lab)
    with pytest.raises(LabelShapeError, match=f"labels.nii.gz: label value {value} at voxel "
                                              r"\(1, 2, 3\)"):
        read_labels(path)


def test_label_file_with_300_does_not_make_a_45_class_model(dataset, tmp_path, capsys):
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labels" / "case00.nii.gz")))
    lab = lab.astype(np.int16)
    lab[0, 0, 0] = 300
    _nifti(dataset / "labels" / "case00.nii.gz", lab)
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--out", str(tmp_path / "t.pt"), *TINY])
    assert "case00.nii.gz" in err and "300" in err


def test_float_label_maps_of_whole_numbers_are_read_and_fractions_refused(tmp_path):
    lab = np.zeros((2, 4, 4), np.float32)
    lab[0, 1, 1] = 2
    assert read_labels(_nifti(tmp_path / "a.nii.gz", lab))[0].dtype == np.uint8
    lab[0, 1, 2] = 0.5
    with pytest.raises(LabelShapeError, match="whole numbers"):
        read_labels(_nifti(tmp_path / "b.nii.gz", lab))


def test_evaluate_does_not_score_classes_that_are_nowhere(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 2:5, 2:5] = 1
    _nifti(pred / "c.nii.gz", lab)
    _nifti(ref / "c.nii.gz", lab)
    report = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--labels", str(ref), "--num-classes", "3",
                 "--json", str(report)]) == 0
    res = json.loads(report.read_text(encoding="utf-8"))
    assert res["mean"]["dice"] == [1.0, None]  # class 2 is absent: not a free Dice of 1
    assert res["not_scored"] == [2]
    assert "n/a" in capsys.readouterr().out


# ----- 1. full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; skipped where this process may not mount one."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_disk_never_replaces_a_good_file(small_disk):
    good = np.arange(6 * 16 * 16, dtype=np.uint8).reshape(6, 16, 16)
    path = small_disk / "labels.nii.gz"
    write_volume(path, good, Geometry.identity(3))
    _fill(small_disk)
    noise = np.random.default_rng(0).integers(0, 255, (6, 64, 64), dtype=np.uint8)
    with pytest.raises(WriteError, match="labels.nii.gz"):
        write_volume(path, noise, Geometry.identity(3))
    assert np.array_equal(read_volume(path).data, good)
    assert not [p for p in small_disk.iterdir() if "partial" in p.name]


def test_full_disk_autosave_is_reported_once_and_the_session_still_opens(small_disk):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 48, 48)).astype(np.float32)
    s = Session(image, folder=small_disk / "session")  # image written to the folder too
    s.mark_labelled(0, 2, np.ones((48, 48), np.uint8))
    errors: list[str] = []
    s.on_autosave_error = errors.append
    _fill(small_disk)
    for k in (3, 4):  # painting goes on on a full disk
        s.mark_labelled(0, k, rng.integers(0, 3, (48, 48)).astype(np.uint8))
    assert len(errors) == 1 and "Autosave" in errors[0] and s.autosave_error
    assert s.labelled_slices(0) == [2, 3, 4]  # nothing is lost in the window
    # the last good autosave is intact and opens
    again = Session.open(small_disk / "session", autosave=False)
    assert 2 in again.labelled_slices(0)
    assert (again.user_labels[2] == 1).all()
    # space comes back: the next change saves everything, and the error clears
    (small_disk / "filler").unlink()
    s.accept_slice(0, 5)
    assert s.autosave_error is None
    s.close()
    reopened = Session.open(small_disk / "session", autosave=False)
    assert reopened.labelled_slices(0) == [2, 3, 4, 5]


def test_failed_save_session_keeps_autosaving_to_the_old_folder(tmp_path, small_disk):
    image = np.random.default_rng(1).normal(size=(4, 64, 64)).astype(np.float32)
    s = Session(image, folder=tmp_path / "auto")
    s.mark_labelled(0, 1, np.ones((64, 64), np.uint8))
    _fill(small_disk)
    with pytest.raises(OSError):
        s.save(small_disk / "saved")
    assert s.folder == tmp_path / "auto"
    s.accept_slice(0, 2)  # autosave still goes to the complete folder
    assert Session.open(tmp_path / "auto", autosave=False).labelled_slices(0) == [1, 2]


def test_a_write_that_sitk_leaves_empty_is_caught(tmp_path, monkeypatch):
    """What SimpleITK does on a full disk, without needing one: a file of 0 bytes, no error."""
    path = tmp_path / "x.nii.gz"
    good = np.ones((2, 4, 4), np.uint8)
    write_volume(path, good, None)

    def nwad(image, name, *args, **kwargs):
        Path(name).write_bytes(b"")

    monkeypatch.setattr(sitk, "WriteImage", nwad)
    with pytest.raises(WriteError, match="x.nii.gz"):
        write_volume(path, good * 2, None)
    monkeypatch.undo()
    assert np.array_equal(read_volume(path).data, good)


# ----- 5. two windows on one scan ----------------------------------------------------------------


def test_two_windows_on_one_scan_never_share_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path))
    a, b = default_folder("/data/scan.nii.gz"), default_folder("/data/scan.nii.gz")
    assert a != b and a.parent == b.parent
    image = np.zeros((3, 8, 8), np.float32)
    first = Session(image, folder=a)
    first.mark_labelled(0, 1, np.ones((8, 8), np.uint8))
    with pytest.raises(FolderLockedError, match="napari-semiseg window"):
        Session.open(a)  # a second window may not autosave into the first one's folder
    assert Session.open(a, autosave=False).labelled_slices(0) == [1]  # reading is fine
    first.close()
    Session.open(a).close()  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    import socket

    folder = tmp_path / "s"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / ".napari-semiseg.lock").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname()}), encoding="utf-8")
    Session(np.zeros((2, 4, 4), np.float32), folder=folder).close()


# ----- 7. smaller ones ---------------------------------------------------------------------------


def test_gzip_garbage_names_the_file_in_the_reader_and_open_session(tmp_path):
    image = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    s = Session(image, folder=tmp_path / "s")
    s.close()
    bad = tmp_path / "s" / "user_labels.nii.gz"
    raw = bytearray(bad.read_bytes())
    raw[20:60] = b"\xff" * 40  # garbage inside the deflate stream
    bad.write_bytes(bytes(raw))
    with pytest.raises(VolumeReadError, match="user_labels.nii.gz"):
        read_volume(bad)
    with pytest.raises(VolumeReadError, match="user_labels.nii.gz"):
        Session.open(tmp_path / "s")


def test_a_misfit_uncertainty_file_is_dropped_with_a_warning(tmp_path):
    image = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    s = Session(image, folder=tmp_path / "s")
    s.close()
    np.save(tmp_path / "s" / "uncertainty.npy", np.zeros((2, 8, 8), np.float32))
    r = Session.open(tmp_path / "s", autosave=False)
    assert r.uncertainty is None and "uncertainty.npy" in r.warnings[0]


def test_a_misfit_uncertainty_changes_nothing(tmp_path):
    s = Session(np.zeros((3, 8, 8), np.float32), autosave=False)
    before = s.prediction.copy()
    with pytest.raises(LabelShapeError):
        s.merge_prediction(np.ones((3, 8, 8), np.uint8), np.zeros((2, 8, 8), np.float32))
    assert np.array_equal(s.prediction, before) and s.uncertainty is None


def test_a_truncated_mha_is_not_reported_as_missing(tmp_path):
    a = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    path = tmp_path / "scan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path))  # uncompressed
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(VolumeReadError) as e:
        read_volume(path)
    assert "scan.mha" in str(e.value) and "no such file" not in str(e.value).lower()


def test_mhd_with_missing_data_file_names_it(tmp_path):
    path = tmp_path / "scan.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 4), np.uint8)), str(path))
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(VolumeReadError, match="data file scan.raw is missing"):
        read_volume(path)


def test_predict_on_a_png_folder_with_a_bad_file_writes_nothing(model, tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for k in range(3):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 16), 40 * k, np.uint8)),
                        str(folder / f"s{k}.png"))
    (folder / "s3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = tmp_path / "out"
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(folder),
                              "--output", f"{out}/", "--device", "cpu"])
    assert "s3.png" in err
    assert not out.exists() or not any(out.iterdir())
    (folder / "s3.png").unlink()  # the good slices alone: one stack, one volume out
    assert main(["predict", "--model", str(model), "--input", str(folder), "--output",
                 f"{out}/", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pngs.nii.gz"]
    assert read_labels(out / "pngs.nii.gz")[0].shape == (3, 16, 16)


def test_grey_plus_alpha_png_reads_as_grey(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    ga = np.stack([grey, np.full_like(grey, 255)], -1)
    path = tmp_path / "ga.png"
    sitk.WriteImage(sitk.GetImageFromArray(ga, isVector=True), str(path))
    vol = read_volume(path)
    assert not vol.rgb and np.array_equal(vol.data, grey)
    arr, _ = read_image(path)
    assert arr.shape == (1, 8, 8)


def test_nii_beside_nii_gz_reads_each_file_as_itself(tmp_path):
    """Found by the fuzz corpus: SimpleITK alone reads scan.nii.gz's header with scan.nii's
    voxels when both lie in one folder."""
    a = np.random.default_rng(0).normal(100, 30, (3, 6, 7)).astype(np.float32)
    b = np.arange(3 * 6 * 7, dtype=np.int16).reshape(3, 6, 7)
    _nifti(tmp_path / "scan.nii.gz", a)
    _nifti(tmp_path / "scan.nii", b)
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path /
                                                                        "scan.nii.gz"))), a)
    assert np.array_equal(read_volume(tmp_path / "scan.nii.gz").data, a)
    assert np.array_equal(read_volume(tmp_path / "scan.nii").data, b)

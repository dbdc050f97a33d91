"""Issue 24, Reliability II: no output destroys an input, no silently wrong read, no inflated
score. Each test is one case a hostile tester found, made with real files (no display)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import test_reliability as issue9
import torch
from test_reliability import TINY, _cli_error

from napari_semiseg._reader import read_layers
from napari_semiseg.folder_lock import LOCK_FILE, FolderLockedError
from napari_semiseg.session import Session, SessionError
from training.cli import main
from training.core.io import VolumeReadError, read_labels, read_volume

# issue 9's fixtures: a small dataset, a model trained on it for 2 steps, a 1 MiB disk
dataset, model, small_disk = issue9.dataset, issue9.model, issue9.small_disk


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _scan(seed: int = 0, shape=(3, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 30, shape).astype(np.float32)


# ----- 1. outputs never touch inputs ------------------------------------------------------------


def test_predict_onto_its_own_input_is_refused(model, tmp_path, capsys):
    scan = _nifti(tmp_path / "x.nii.gz", _scan())
    before = scan.read_bytes()
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(scan),
                              "--output", str(scan), "--device", "cpu"])
    assert "x.nii.gz" in err and "is the input" in err
    link = tmp_path / "link.nii.gz"  # another name of the same file is no way around it
    link.symlink_to(scan)
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(scan),
                              "--output", str(link), "--device", "cpu"])
    assert "is the input" in err
    # a folder predicted onto itself
    folder = tmp_path / "scans"
    for k in range(2):
        _nifti(folder / f"s{k}.nii.gz", _scan(k))
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(folder),
                              "--output", str(folder), "--device", "cpu"])
    assert "is the input" in err and "scans" in err
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(folder),
                              "--output", str(folder / "preds"), "--device", "cpu"])
    assert "inside the input folder" in err
    assert scan.read_bytes() == before
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_predict_refuses_two_outputs_in_one_file(model, tmp_path, capsys):
    scan = _nifti(tmp_path / "x.nii.gz", _scan())
    out = tmp_path / "f.nii.gz"
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(scan),
                              "--output", str(out), "--uncertainty", str(out),
                              "--device", "cpu"])
    assert "--uncertainty" in err and "same file as --output" in err and "f.nii.gz" in err
    assert not out.exists()
    # the same with folders: labels and uncertainty of one scan would share a name
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input", str(scan),
                              "--output", str(tmp_path / "o") + "/", "--uncertainty",
                              str(tmp_path / "o") + "/", "--device", "cpu"])
    assert "same file" in err
    assert not (tmp_path / "o").exists()


def test_train_and_pretrain_never_overwrite_a_training_scan(dataset, tmp_path, capsys):
    victim = dataset / "images" / "case00.nii.gz"
    before = victim.read_bytes()
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--out", str(victim), *TINY])
    assert "case00.nii.gz" in err and "is the input" in err
    err = _cli_error(capsys, ["pretrain", "--data", str(dataset), "--steps", "1",
                              "--out", str(victim)])
    assert "case00.nii.gz" in err
    # nor a new file among the scans, where it would be read as one next time
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--out", str(dataset / "labels" / "m.pt"), *TINY])
    assert "inside the input folder" in err
    assert victim.read_bytes() == before
    assert not (dataset / "labels" / "m.pt").exists()


def test_card_and_benchmark_reports_never_overwrite_the_data(dataset, model, tmp_path, capsys):
    label = dataset / "labels" / "case03.nii.gz"
    before = label.read_bytes()
    err = _cli_error(capsys, ["card", "--model", str(model), "--data", str(dataset),
                              "--anatomy", "blobs", "--modality", "synthetic", "--trained-with",
                              "x", "--split-note", "y", "--markdown", str(label)])
    assert "--markdown" in err and "case03.nii.gz" in err
    err = _cli_error(capsys, ["benchmark", "label-efficiency", "--data", str(dataset),
                              "--labeled", "1", "--methods", "supervised", "--seeds", "1",
                              "--steps", "1", "--out", str(label), *TINY])
    assert "--out" in err and "case03.nii.gz" in err
    assert label.read_bytes() == before


def test_evaluate_json_may_not_overwrite_a_label_file(tmp_path, capsys):
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 2:5, 2:5] = 1
    _nifti(tmp_path / "pred" / "c.nii.gz", lab)
    ref = _nifti(tmp_path / "ref" / "c.nii.gz", lab)
    err = _cli_error(capsys, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                              str(tmp_path / "ref"), "--json", str(ref)])
    assert "--json" in err and "c.nii.gz" in err
    assert np.array_equal(read_labels(ref)[0], lab)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be created in: a read-only tmpfs for root (whom chmod does not
    stop), a chmod 555 folder for anyone else."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("root without mount(8): cannot make a read-only folder")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_train_out_in_a_read_only_folder_fails_before_the_first_step(dataset, read_only_dir,
                                                                     capsys):
    rc = main(["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d", "--steps",
               "3", "--log-every", "1", "--out", str(read_only_dir / "m.pt"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write in" in err and "m.pt" in err
    assert not re.search(r"step \d+/3", err), "it trained before finding out"


def test_a_full_disk_midway_through_a_folder_of_outputs_changes_none(model, tmp_path,
                                                                     small_disk, capsys):
    scans = tmp_path / "scans"
    for k in range(3):
        _nifti(scans / f"s{k}.nii.gz", _scan(k, (8, 64, 64)))
    # the size of one set of new outputs, measured on a roomy disk
    probe = tmp_path / "probe"
    assert main(["predict", "--model", str(model), "--input", str(scans), "--output",
                 str(probe / "lab"), "--uncertainty", str(probe / "unc"), "--device",
                 "cpu"]) == 0
    sizes = sorted(p.stat().st_size for p in (probe / "unc").iterdir())
    assert sizes[0] > 20_000  # several pages each: the disk fills on the second one
    lab, unc = small_disk / "lab", small_disk / "unc"
    old = {}
    for folder in (lab, unc):
        for k in range(3):
            old[folder / f"s{k}.nii.gz"] = _nifti(folder / f"s{k}.nii.gz",
                                                  np.full((8, 64, 64), 7, np.uint8)).read_bytes()
    st = os.statvfs(small_disk)
    free = st.f_bavail * st.f_frsize
    with open(small_disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - sizes[0] - sizes[0] // 2 - 8192))
    capsys.readouterr()
    rc = main(["predict", "--model", str(model), "--input", str(scans), "--output", str(lab),
               "--uncertainty", str(unc), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "semiseg: error:" in err
    assert re.search(r"unc/s\d\.nii\.gz", err) and "no output was changed" in err
    for path, data in old.items():  # every earlier output as it was: none half new
        assert path.read_bytes() == data, f"{path.name} in {path.parent.name} was replaced"
    leftovers = [p.name for f in (lab, unc) for p in f.iterdir() if p.name.startswith(".")]
    assert not leftovers
    (small_disk / "filler").unlink()
    assert main(["predict", "--model", str(model), "--input", str(scans), "--output", str(lab),
                 "--uncertainty", str(unc), "--device", "cpu"]) == 0
    assert all(path.read_bytes() != data for path, data in old.items())


# ----- 3. checkpoints checked where they are read ------------------------------------------------


def _rewrite(src: Path, dst: Path, change) -> Path:
    payload = torch.load(src, weights_only=True)
    change(payload)
    torch.save(payload, dst)
    return dst


def test_a_checkpoint_with_one_nan_weight_is_refused(dataset, model, tmp_path, capsys):
    def poison(payload):
        w = next(v for v in payload["state_dict"].values() if v.is_floating_point())
        w.view(-1)[0] = float("nan")

    bad = _rewrite(model, tmp_path / "nan.pt", poison)
    scan = _nifti(tmp_path / "x.nii.gz", _scan())
    out = tmp_path / "out.nii.gz"
    err = _cli_error(capsys, ["predict", "--model", str(bad), "--input", str(scan),
                              "--output", str(out), "--device", "cpu"])
    assert "nan.pt" in err and "NaN" in err
    assert not out.exists()
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d",
                              "--steps", "1", "--init", str(bad), "--out",
                              str(tmp_path / "ft.pt"), *TINY])
    assert "nan.pt" in err and "NaN" in err


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.pop("meta"), "'meta'"),
    (lambda p: p.pop("state_dict"), "'state_dict'"),
    (lambda p: p["meta"].pop("network"), "'network'"),
    (lambda p: p["meta"].pop("size"), "'size'"),
    (lambda p: p["meta"].update(num_classes=7), "num_classes 7"),
])
def test_a_checkpoint_missing_a_key_is_a_clear_error(model, tmp_path, capsys, damage, words):
    bad = _rewrite(model, tmp_path / "bad.pt", damage)
    err = _cli_error(capsys, ["predict", "--model", str(bad), "--input",
                              str(_nifti(tmp_path / "x.nii.gz", _scan())),
                              "--output", str(tmp_path / "o.nii.gz"), "--device", "cpu"])
    assert "bad.pt" in err and words in err


def _named_dataset(root: Path, names: list[str] | None, classes: int = 4) -> Path:
    """Three 2-D-ish cases whose labels hold 0..classes-1; ``names`` as index.csv's
    ``voxels_<name>`` columns (how ACDC names RV, Myo, LV), or no index at all."""
    rows = []
    for k in range(3):
        lab = np.zeros((2, 16, 16), np.uint8)
        for c in range(1, classes):
            lab[:, 2 * c: 2 * c + 2, 2:10] = c
        img = (100 + 50 * lab + np.random.default_rng(k).normal(0, 5, lab.shape)).astype(
            np.int16)
        _nifti(root / "images" / f"c{k}.nii.gz", img)
        _nifti(root / "labels" / f"c{k}.nii.gz", lab)
        rows.append({"case": f"c{k}", "image": f"images/c{k}.nii.gz",
                     "label": f"labels/c{k}.nii.gz",
                     **{f"voxels_{n}": 1 for n in names or []}})
    if names:
        with open(root / "index.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


TRAIN_INIT = ["--labeled", "1", "--dims", "2d", "--steps", "1", "--size", "32", "32",
              "--labeled-bs", "2", "--device", "cpu"]


def test_init_with_a_model_of_other_structures_is_refused(tmp_path, capsys):
    from training.interactive.new_model import new_model

    lgg = new_model(tmp_path / "lgg.pt", ["background", "FLAIR abnormality"])
    cardiac = _named_dataset(tmp_path / "acdc", ["RV", "Myo", "LV"])
    out = tmp_path / "ft.pt"
    err = _cli_error(capsys, ["train", "--data", str(cardiac), "--init", lgg,
                              "--out", str(out), *TRAIN_INIT])
    assert "lgg.pt" in err and "'FLAIR abnormality'" in err and "'RV'" in err
    assert not out.exists()
    acdc4 = new_model(tmp_path / "acdc4.pt", ["background", "RV", "Myo", "LV"])
    err = _cli_error(capsys, ["train", "--data", str(cardiac), "--init", acdc4,
                              "--num-classes", "2", "--out", str(out), *TRAIN_INIT])
    assert "--num-classes 2" in err and "acdc4.pt" in err


def test_growing_a_model_names_new_classes_after_the_data(tmp_path):
    """Regression guard beside the refusal above: data that names nothing may extend a model;
    its old class keeps its name and the added ones are the data's."""
    from training.engine.checkpoint import read_meta
    from training.interactive.new_model import new_model

    lgg = new_model(tmp_path / "lgg.pt", ["background", "FLAIR abnormality"])
    data = _named_dataset(tmp_path / "plain", None)
    out = tmp_path / "grown.pt"
    assert main(["train", "--data", str(data), "--init", lgg, "--out", str(out),
                 *TRAIN_INIT]) == 0
    assert read_meta(out)["class_names"] == ["background", "FLAIR abnormality", "class2",
                                             "class3"]


# ----- 4. compressed MetaImage ---------------------------------------------------------------


def _metaimage(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=compress)
    return path


def _every_reader(path: Path) -> None:
    """The engine, the plugin's napari reader and a session all refuse ``path`` by name."""
    for read in (read_volume, read_layers, lambda p: Session.from_file(p, autosave=False)):
        with pytest.raises(VolumeReadError) as e:
            read(path)
        assert path.name in str(e.value)


def test_mha_whose_compressed_data_size_is_cut_in_half_is_refused(tmp_path):
    a = np.random.default_rng(0).integers(0, 2000, (5, 40, 50)).astype(np.int16)
    path = _metaimage(tmp_path / "scan.mha", a)
    raw = path.read_bytes()
    n = int(re.search(rb"CompressedDataSize = (\d+)", raw).group(1))
    path.write_bytes(raw.replace(b"CompressedDataSize = %d" % n,
                                 b"CompressedDataSize = %d" % (n // 2)))
    _every_reader(path)


def test_mhd_with_a_flipped_byte_in_its_zraw_is_refused(tmp_path):
    a = np.random.default_rng(1).integers(0, 2000, (5, 40, 50)).astype(np.int16)
    path = _metaimage(tmp_path / "scan.mhd", a)
    zraw = tmp_path / "scan.zraw"
    data = bytearray(zraw.read_bytes())
    data[len(data) // 2] ^= 0x01
    zraw.write_bytes(bytes(data))
    _every_reader(path)


def test_compressed_metaimage_that_cannot_be_verified_is_refused(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (3, 8, 8)).astype(np.uint8)
    path = _metaimage(tmp_path / "nosize.mha", a)
    path.write_bytes(re.sub(rb"CompressedDataSize = \d+\r?\n", b"", path.read_bytes()))
    with pytest.raises(VolumeReadError, match="nosize.mha.*CompressedDataSize"):
        read_volume(path)


def test_intact_metaimages_still_read_exactly(tmp_path):
    a = np.random.default_rng(3).normal(0, 1, (4, 9, 11)).astype(np.float32)
    for name, compress in (("c.mha", True), ("c.mhd", True), ("r.mha", False), ("r.mhd", False)):
        assert np.array_equal(read_volume(_metaimage(tmp_path / name, a, compress)).data, a)


# ----- 5. evaluate scores every class in prediction or reference ---------------------------------


def test_evaluate_scores_a_class_found_only_in_the_prediction(tmp_path, capsys):
    ref = np.zeros((2, 12, 12), np.uint8)
    ref[:, 2:6, 2:6] = 1
    pred = ref.copy()
    pred[:, 8:11, 8:11] = 2  # a structure that is not there
    _nifti(tmp_path / "pred" / "c.nii.gz", pred)
    _nifti(tmp_path / "ref" / "c.nii.gz", ref)
    report = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                 str(tmp_path / "ref"), "--json", str(report)]) == 0
    res = json.loads(report.read_text(encoding="utf-8"))
    assert res["num_classes"] == 3 and res["mean"]["dice"] == [1.0, 0.0]


def test_evaluate_takes_the_class_count_from_a_model_card(model, tmp_path, capsys):
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 2:5, 2:5] = 1
    _nifti(tmp_path / "pred" / "c.nii.gz", lab)
    _nifti(tmp_path / "ref" / "c.nii.gz", lab)
    report = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                 str(tmp_path / "ref"), "--model", str(model), "--json", str(report)]) == 0
    res = json.loads(report.read_text(encoding="utf-8"))
    assert res["num_classes"] == 3 and res["not_scored"] == [2]
    capsys.readouterr()
    err = _cli_error(capsys, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                              str(tmp_path / "ref"), "--model", str(model), "--num-classes", "5"])
    assert "contradicts" in err


def test_benchmark_scores_use_the_same_rule():
    from training.engine.metrics import classes_to_score, mean_dice

    ref = np.zeros((1, 8, 8), np.uint8)
    ref[0, 1:4, 1:4] = 1
    pred = ref.copy()
    pred[0, 5:7, 5:7] = 2
    assert classes_to_score([(pred, ref)], 2) == 3
    assert mean_dice(pred, ref) == pytest.approx(0.5)  # class 2 scores 0
    ref[0, 5:7, 5:7] = 255  # ... unless it lies where nothing is annotated
    assert classes_to_score([(pred, ref)], 2) == 2


def test_an_all_255_label_file_in_evaluate_is_named_truthfully(tmp_path, capsys):
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 2:5, 2:5] = 1
    for case, ref in (("a", lab), ("blank", np.full_like(lab, 255))):
        _nifti(tmp_path / "pred" / f"{case}.nii.gz", lab)
        _nifti(tmp_path / "ref" / f"{case}.nii.gz", ref)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                 str(tmp_path / "ref")]) == 0
    err = capsys.readouterr().err
    assert "blank.nii.gz: every voxel is 255" in err
    assert "in no label file and no prediction" not in err
    capsys.readouterr()
    (tmp_path / "ref" / "a.nii.gz").unlink()
    err = _cli_error(capsys, ["evaluate", "--pred", str(tmp_path / "pred"), "--labels",
                              str(tmp_path / "ref")])
    assert "nothing to score" in err and "blank.nii.gz" in err


# ----- 6. the plugin says what it did -------------------------------------------------------------


@pytest.fixture
def notifications():
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


def test_a_label_named_file_with_300_opens_as_image_and_says_why(tmp_path, notifications):
    lab = np.zeros((2, 5, 6), np.int16)
    lab[1, 2, 3] = 300
    path = _nifti(tmp_path / "case_seg.nii.gz", lab)
    [(data, _, kind)] = read_layers(str(path))
    assert kind == "image" and int(np.asarray(data)[1, 2, 3]) == 300
    [message] = notifications()
    assert "case_seg.nii.gz" in message and "300" in message and "(1, 2, 3)" in message
    floats = _nifti(tmp_path / "labels" / "f.nii.gz", np.full((2, 4, 4), 0.5, np.float32))
    assert read_layers(str(floats))[0][2] == "image"
    assert "f.nii.gz" in notifications()[-1] and "float32" in notifications()[-1]


def test_a_scan_of_one_value_opens_and_says_there_is_nothing_to_segment(tmp_path,
                                                                          notifications):
    blank = _nifti(tmp_path / "export.nii.gz", np.zeros((3, 8, 8), np.float32))
    [(data, kwargs, kind)] = read_layers(str(blank))  # it still opens: the user sees it
    assert kind == "image" and kwargs["contrast_limits"] == (0.0, 1.0)
    [message] = notifications()
    assert "export.nii.gz" in message and "same value (0.0)" in message
    scan = np.zeros((3, 8, 8), np.float32)
    scan[1, 2:5, 2:5] = 1.0
    read_layers(str(_nifti(tmp_path / "scan.nii.gz", scan)))
    assert len(notifications()) == 1  # a real scan says nothing


def test_an_all_255_png_mask_stays_not_annotated(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for k in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((6, 7), 255, np.uint8)),
                        str(masks / f"m{k}.png"))
    assert (read_labels(masks / "m0.png")[0] == 255).all()
    assert (read_labels(masks)[0] == 255).all()  # the stack too
    [(data, _, kind)] = read_layers(str(masks))
    assert kind == "labels" and (np.asarray(data) == 255).all()
    tumour = np.zeros((6, 7), np.uint8)
    tumour[2:4, 2:5] = 255  # a real 0/255 mask still means structure
    sitk.WriteImage(sitk.GetImageFromArray(tumour), str(masks / "m1.png"))
    assert set(np.unique(read_labels(masks / "m1.png")[0])) == {0, 1}


# ----- 7. sessions --------------------------------------------------------------------------------


def _record_edits():
    def drop(key):
        return lambda d: {k: v for k, v in d.items() if k != key}

    def put(key, value):
        return lambda d: {**d, key: value}

    return [
        ("missing geometry", drop("geometry"), "geometry"),
        ("missing shape", drop("shape"), "shape"),
        ("record is a list", lambda d: [d], "list"),
        ("labelled_slices a list", put("labelled_slices", [1, 2]), "labelled_slices"),
        ("slice 999", put("labelled_slices", {"0": [999]}), "labelled_slices.0"),
        ("axis 7", put("labelled_slices", {"7": [1]}), "labelled_slices"),
        ("tag on slice 999", put("tags", {"999": 1}), "tags"),
        ("versions not a list", put("versions", "v1"), "versions"),
        ("version without path", put("versions", [{"id": "v1"}]), "versions[0].path"),
        ("unknown current version", put("current_version", "v9"), "current_version"),
        ("settings a list", put("settings", []), "settings"),
        ("steps as text", put("settings", {"steps": "many"}), "settings.steps"),
        ("spacing of 2", lambda d: {**d, "geometry": {**d["geometry"], "spacing": [1, 1]}},
         "geometry.spacing"),
    ]


@pytest.mark.parametrize("edit,field", [(e, f) for _, e, f in _record_edits()],
                         ids=[name for name, _, _ in _record_edits()])
def test_a_malformed_session_record_is_one_session_error(tmp_path, edit, field):
    folder = tmp_path / "s"
    s = Session(_scan(), folder=folder)
    s.mark_labelled(0, 1, np.ones((16, 16), np.uint8))
    s.close()
    record = folder / "session.json"
    d = json.loads(record.read_text(encoding="utf-8"))
    record.write_text(json.dumps(edit(d)), encoding="utf-8")
    with pytest.raises(SessionError) as e:
        Session.open(folder, autosave=False)
    assert "session.json" in str(e.value) and field in str(e.value)


def test_a_failed_reopen_keeps_autosaving_where_it_was(tmp_path):
    folder = tmp_path / "s"
    s = Session(_scan(), folder=folder)
    s.mark_labelled(0, 1, np.ones((16, 16), np.uint8))
    (folder / "prediction.nii.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(VolumeReadError, match="prediction.nii.gz"):
        Session.reopen(folder, s)
    assert s.autosave_enabled
    with pytest.raises(FolderLockedError):  # still this window's folder
        Session.open(folder)
    s.mark_labelled(0, 2, np.ones((16, 16), np.uint8))  # rewrites every file: it saves
    again = Session.reopen(folder, s)  # a good reopen hands the folder over
    assert again.labelled_slices(0) == [1, 2] and again.autosave_enabled
    again.close()


def test_an_empty_lock_file_is_not_taken_over(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / LOCK_FILE).write_bytes(b"")  # another window mid-write, or a broken one
    with pytest.raises(FolderLockedError, match=LOCK_FILE):
        Session(_scan(), folder=folder)
    assert (folder / LOCK_FILE).exists()


# ----- argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [["7", "7"], ["0", "0"], ["-32", "32"]])
def test_a_size_no_unet_can_take_is_a_clear_error(dataset, tmp_path, capsys, size):
    args = ["train", "--data", str(dataset), "--labeled", "1", "--dims", "2d", "--steps", "1",
            "--out", str(tmp_path / "m.pt"), *TINY]
    args[args.index("--size") + 1: args.index("--size") + 3] = size
    err = _cli_error(capsys, args)
    assert "--size" in err and "multiple of 8" in err  # unshuffle 2 x 2**depth 2


def test_negative_mc_samples_are_refused(model, tmp_path, capsys):
    err = _cli_error(capsys, ["predict", "--model", str(model), "--input",
                              str(_nifti(tmp_path / "x.nii.gz", _scan())), "--output",
                              str(tmp_path / "o.nii.gz"), "--mc", "-3", "--device", "cpu"])
    assert "--mc -3" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_labeled_more_patients_than_the_data_holds_is_refused(dataset, tmp_path, capsys):
    err = _cli_error(capsys, ["train", "--data", str(dataset), "--labeled", "100", "--dims",
                              "2d", "--steps", "1", "--out", str(tmp_path / "m.pt"), *TINY])
    assert "--labeled 100" in err and "only 2 patients" in err

"""The Qt-free session: labelled slices, a merge that never overwrites them, autosave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_semiseg.folder_lock import LOCK_FILE
from napari_semiseg.io import Geometry, LabelShapeError, read_volume, write_volume
from napari_semiseg.session import (
    NoLabelledSlicesError,
    Session,
    SessionError,
    Settings,
    default_folder,
)
from training.interactive.loop import SUGGEST_BODY_FIRST

SHAPE = (6, 12, 10)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _random_labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, SHAPE).astype(np.uint8)


def _geometry() -> Geometry:
    return Geometry(spacing=(0.8, 0.7, 2.5), origin=(10.0, -4.0, 3.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


@pytest.fixture
def scan(tmp_path) -> Path:
    path = tmp_path / "scan.nii.gz"
    write_volume(path, _image(), _geometry())
    return path


def _checkpoint(tmp_path: Path, name: str, content: bytes = b"weights") -> Path:
    # the session only copies checkpoints around; it never loads them
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_merge_never_touches_labelled_slices():
    s = Session(_image(), prediction=_random_labels(1))
    s.mark_labelled(0, 2)
    painted = np.full(SHAPE[1:], 3, np.uint8)
    painted[:4] = 0
    s.mark_labelled(0, 4, painted)
    s.accept_slice(2, 7)  # a slice along x: crosses every z slice
    mask = s.labelled_mask()
    kept = s.prediction[mask].copy()
    user = s.user_labels.copy()
    for seed in range(2, 6):
        new = _random_labels(seed)
        out = s.merge_prediction(new)
        assert out is s.prediction  # in place: a napari layer sharing it sees the update
        assert np.array_equal(s.prediction[mask], kept)  # bit for bit
        assert np.array_equal(s.prediction[~mask], new[~mask])
        assert np.array_equal(s.user_labels, user)
    assert np.array_equal(s.prediction[4], painted)


def test_merge_checks_shape():
    s = Session(_image())
    with pytest.raises(LabelShapeError):
        s.merge_prediction(np.zeros((6, 12, 9), np.uint8))
    with pytest.raises(LabelShapeError):
        Session(_image(), prediction=np.zeros((5, 12, 10), np.uint8))
    with pytest.raises(LabelShapeError):
        s.merge_prediction(np.zeros(SHAPE, np.float32))


def test_painted_slices_detected_from_arrays():
    s = Session(_image(), prediction=np.zeros(SHAPE, np.uint8))
    old = s.prediction.copy()
    new = old.copy()
    new[1, 3:5, 3:5] = 2
    new[4, 0, 0] = 1
    assert s.detect_painted_slices(old, new, axis=0) == [1, 4]
    assert s.labelled_slices(0) == [1, 4]
    assert np.array_equal(s.user_labels[1], new[1]) and np.array_equal(s.prediction[4], new[4])
    assert (s.user_labels[[0, 2, 3, 5]] == 255).all()
    new2 = s.prediction.copy()
    new2[:, 5, :] = 1  # one stroke along y, seen on axis 1
    assert s.detect_painted_slices(s.prediction.copy(), new2, axis=1) == [5]
    assert s.is_labelled(1, 5)


def test_painted_slices_detected_from_napari_paint_indices():
    s = Session(_image(), prediction=np.zeros(SHAPE, np.uint8))
    # napari paints into the layer's array (shared with the session), then reports the voxels
    s.prediction[3, 2:4, 2:4] = 1
    s.prediction[5, 0, 1] = 1
    atoms = [((np.array([3, 3, 3, 3]), np.array([2, 2, 3, 3]), np.array([2, 3, 2, 3])),
              np.zeros(4, np.uint8)),
             ((np.array([5]), np.array([0]), np.array([1])), np.zeros(1, np.uint8))]
    assert s.detect_painted_slices(indices=atoms, axis=0) == [3, 5]
    assert np.array_equal(s.user_labels[3], s.prediction[3])
    assert s.user_labels[5, 0, 1] == 1
    # the same stroke seen along x: the slices are x = 1, 2, 3
    assert s.detect_painted_slices(indices=atoms[0][0] + (), axis=2) == [2, 3]
    # painting a labelled slice again updates the user's voxels
    s.prediction[3, 0, 0] = 2
    s.detect_painted_slices(indices=(np.array([3]), np.array([0]), np.array([0])))
    assert s.user_labels[3, 0, 0] == 2
    s.merge_prediction(np.zeros(SHAPE, np.uint8))
    assert s.prediction[3, 0, 0] == 2 and s.prediction[5, 0, 1] == 1


def test_unmark_returns_slice_to_the_model():
    s = Session(_image(), prediction=np.ones(SHAPE, np.uint8))
    s.mark_labelled(0, 1)
    s.mark_labelled(2, 0)
    s.unmark_labelled(0, 1)
    assert s.labelled_slices() == [(2, 0)]
    assert (s.user_labels[1, :, 1:] == 255).all() and (s.user_labels[1, :, 0] == 1).all()
    s.merge_prediction(np.zeros(SHAPE, np.uint8))
    assert (s.prediction[1, :, 1:] == 0).all() and (s.prediction[:, :, 0] == 1).all()


def test_next_uncertain_slice_moves_away_from_the_slices_just_painted():
    """Uncertainty clusters next to a painted slice; the suggestion goes where nothing was
    painted yet (the plugin's coverage weighting), among slices showing the structure."""
    shape = (20, 12, 12)
    s = Session(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    pred = np.zeros(shape, np.uint8)
    pred[2:18, 3:9, 3:9] = 1
    unc = np.full(shape, 0.5, np.float32)
    unc[11:13] = 0.9  # most unsure right beside slice 10
    pred[9, 2:10, 2:10] = 1  # its largest section
    s.merge_prediction(pred, uncertainty=unc)
    if SUGGEST_BODY_FIRST:  # a fresh scan starts at the structure's body, not its entropy
        assert s.starting_slice() == s.next_uncertain_slice() == 9
    s.accept_slice(0, 10)
    assert s.starting_slice() is None  # once a slice is painted, uncertainty leads
    assert s.next_uncertain_slice() == 2  # the farthest slice with the structure
    s.accept_slice(0, 2)
    assert s.next_uncertain_slice() == 17  # then the far end


def test_ranked_uncertain_slices_skip_labelled():
    s = Session(_image())
    with pytest.raises(SessionError, match="Predict"):
        s.ranked_uncertain_slices()
    unc = np.zeros(SHAPE, np.float32)
    unc[[0, 3, 5]] = np.array([0.2, 0.9, 0.5])[:, None, None]
    s.merge_prediction(np.zeros(SHAPE, np.uint8), uncertainty=unc)
    assert [i for i, _ in s.ranked_uncertain_slices()][:3] == [3, 5, 0]
    s.accept_slice(0, 3)
    assert s.next_uncertain_slice() == 5
    assert s.ranked_uncertain_slices(0)[0] == (5, pytest.approx(0.5))


def test_next_uncertain_slice_goes_where_most_voxels_are_unsure_not_to_a_speck():
    # Dice counts voxels: a large, moderately unsure section outranks a very unsure speck of
    # structure at the same distance from the painted slice (the shipped "sum" score)
    pred = np.zeros(SHAPE, np.uint8)
    unc = np.zeros(SHAPE, np.float32)
    pred[0, 2:10, 2:8] = 1  # a large section, a little unsure inside
    unc[0, 2:10, 2:8] = 0.4
    pred[2, 3:9, 3:7] = 1  # the slice the user accepts
    pred[4, 0, 0] = 1  # a speck, very unsure around it
    unc[4, :3, :3] = 0.9
    s = Session(_image(), prediction=pred)
    s.merge_prediction(pred, uncertainty=unc)
    s.accept_slice(0, 2)
    assert s.next_uncertain_slice() == 0


def test_a_new_models_first_scan_fills_the_longest_gaps_between_its_painted_ends_first(
        tmp_path, disc_model):
    from training.interactive.new_model import new_model

    shape = (41, 12, 12)
    pred = np.zeros(shape, np.uint8)
    pred[:, 3:9, 3:9] = 1
    unc = np.full(shape, 0.02, np.float32)
    unc[19:22] = 0.9  # the model doubts the slices next to the painted middle most

    def session(start) -> Session:  # in a folder: versions are kept there, by relative path
        s = Session(np.zeros(shape, np.float32), prediction=pred,
                    folder=tmp_path / Path(start).stem)
        s.add_version(start, note="start")
        s.merge_prediction(pred, uncertainty=unc)
        for z in (0, 20, 40):  # the structure's first, middle and last slices
            s.accept_slice(0, z)
        return s

    new = session(new_model(tmp_path / "new.pt", ["background", "atrium"], seed=0))
    assert new.started_untrained
    assert new.next_uncertain_slice(within_ends=True) in (10, 30)  # a quarter
    assert new.gaps_to_fill(within_ends=True) == {10: (0, 20), 30: (20, 40)}
    assert new.next_uncertain_slice() in (19, 21)  # outer painted slices not the ends
    assert new.gaps_to_fill() == {}
    new.accept_slice(0, 10)
    new.accept_slice(0, 30)  # five painted: by uncertainty again
    assert new.next_uncertain_slice(within_ends=True) in (19, 21)

    later = session(disc_model)  # a model not made by New model: by uncertainty
    assert not later.started_untrained
    assert later.next_uncertain_slice(within_ends=True) in (19, 21)


def test_each_suggested_slice_says_why_with_uncertainty_as_a_share_of_the_most_unsure(
        tmp_path, disc_model):
    shape = (12, 16, 16)
    pred = np.zeros(shape, np.uint8)
    pred[2:10, 4:12, 4:12] = 1  # the structure spans slices 2-9; slices 0, 1, 10, 11 empty
    pred[5, 2:14, 2:14] = 1  # its largest section
    unc = np.full(shape, 1e-4, np.float32)
    unc[7] = 0.5  # doubted most
    unc[3] = 0.25  # half as much
    unc[11] = 0.9  # an empty slice, noisy
    s = Session(np.zeros(shape, np.float32), prediction=pred)
    s.add_version(disc_model, note="start")
    s.merge_prediction(pred, uncertainty=unc)

    ranked = s.ranked_uncertain_slices()
    why = dict(zip([i for i, _ in ranked], s.why_suggested(ranked), strict=True))
    assert ranked[0][0] == 5 and why[5] == "the structure's largest section: start here"

    s.accept_slice(0, 5)
    ranked = s.ranked_uncertain_slices()
    why = dict(zip([i for i, _ in ranked], s.why_suggested(ranked), strict=True))
    assert ranked[0][0] == 7 and why[7] == "unsure near the structure: 100 %"
    share = int(why[3].split(": ")[1].rstrip(" %"))
    # slice 3 has half slice 7's uncertainty; the ranking also weighs the distance to the
    # painted slice 5 (both are 2 away), so the share is the uncertainty's
    assert share == 50
    assert why[9] == "unsure near the structure: < 1 %"
    assert why[11] == "no structure predicted: check it is empty"  # noisy, yet listed last
    assert [i for i, _ in ranked][-4:] == [11, 0, 1, 10]

def test_training_labels_and_held_back_split():
    s = Session(_image(), prediction=_random_labels(0))
    with pytest.raises(NoLabelledSlicesError):
        s.training_labels()
    with pytest.raises(NoLabelledSlicesError):
        s.held_back_split()
    for i in (0, 2, 5):
        s.accept_slice(0, i)
    lab = s.training_labels()
    assert np.array_equal(lab[[0, 2, 5]], s.prediction[[0, 2, 5]])
    assert (lab[[1, 3, 4]] == 255).all()
    train, held = s.held_back_split()
    assert len(held) == 1 and len(train) == 2
    only = s.training_labels(train)
    assert (only[held[0][1]] == 255).all()
    with pytest.raises(SessionError):
        s.training_labels([(0, 1)])
    s.settings.judge_retrains = False  # a model taught from scratch: every slice trains it
    assert s.held_back_split() == (s.labelled_slices(), [])
    assert Settings.from_dict(s.settings.__dict__).judge_retrains is False  # saved with it


def test_a_rejected_retrain_is_listed_and_the_previous_version_stays(tmp_path):
    """The session takes the engine's verdict (training.interactive.retrain.judge) as it is."""
    s = Session(_image(), folder=tmp_path / "sess")
    v0 = s.add_version(_checkpoint(tmp_path, "base.pt"), method="pretrained")
    v1 = s.add_retrain(_checkpoint(tmp_path, "a.pt", b"a"), adopted=True, reason="adopted",
                       score=0.75, parent_score=0.6, method="supervised", steps=5)
    assert s.current == v1.id and v1.parent == v0.id and v1.adopted
    v2 = s.add_retrain(_checkpoint(tmp_path, "b.pt", b"b"), adopted=False,
                       reason="rejected: worse", score=0.5, parent_score=0.75,
                       method="mean_teacher", steps=5)
    assert v2.note == "rejected: worse"
    assert s.current == v1.id  # the previous version stays current
    assert not v2.adopted and v2.score == 0.5 and v2.parent_score == 0.75
    assert [v.id for v in s.versions] == ["v0", "v1", "v2"]
    assert Path(s.current_model_path).read_bytes() == b"a"


def test_rollback_and_missing_version(tmp_path):
    s = Session(_image())
    s.add_version(_checkpoint(tmp_path, "base.pt"))
    s.add_version(_checkpoint(tmp_path, "new.pt", b"new"), parent="v0")
    assert s.current == "v1"
    s.use_version("v0")
    assert s.current == "v0" and Path(s.current_model_path).read_bytes() == b"weights"
    with pytest.raises(SessionError, match="no model version"):
        s.use_version("v9")
    with pytest.raises(SessionError, match="not found"):
        s.add_version(tmp_path / "nope.pt")


def test_preview_then_reject_restores_prediction(tmp_path):
    s = Session(_image(), prediction=np.zeros(SHAPE, np.uint8))
    s.add_version(_checkpoint(tmp_path, "base.pt"))
    s.accept_slice(0, 0)
    s.preview_prediction(np.ones(SHAPE, np.uint8))
    assert (s.prediction[1:] == 1).all() and (s.prediction[0] == 0).all()
    s.prediction[2, 0, 0] = 3  # the user keeps painting during the run
    s.detect_painted_slices(indices=(np.array([2]), np.array([0]), np.array([0])))
    np.save(tmp_path / "p.npy", np.full(SHAPE, 2, np.uint8))
    done = {"type": "done", "checkpoint": str(_checkpoint(tmp_path, "r.pt", b"r")),
            "prediction": str(tmp_path / "p.npy"), "uncertainty": None,
            "adopted": False, "reason": "rejected", "old_score": 0.9, "new_score": 0.1,
            "parent": "v0", "method": "supervised", "steps": 3}
    v, ok, _ = s.apply_retrain_result(done)
    assert not ok and s.current == "v0" and v.id == "v1"
    assert (s.prediction[[1, 3, 4, 5]] == 0).all()  # back to the pre-preview prediction
    assert s.prediction[2, 0, 0] == 3 and s.user_labels[2, 0, 0] == 3  # stroke kept
    done.update(adopted=True, reason="adopted", new_score=0.95)
    v, ok, _ = s.apply_retrain_result(done)
    assert ok and s.current == v.id
    assert (s.prediction[[1, 3, 4, 5]] == 2).all() and s.prediction[2, 0, 0] == 3


def test_a_rejected_retrain_asked_to_keep_within_the_ends_leaves_nothing_beyond_them(
        tmp_path):
    # the user painted the structure's ends (slices 1 and 3): whichever model is kept, its
    # prediction beyond them goes, and the painted slices stay as painted
    s = Session(_image(), prediction=np.ones(SHAPE, np.uint8))
    s.add_version(_checkpoint(tmp_path, "base.pt"))
    for z in (1, 3):
        s.prediction[z] = 2
        s.mark_labelled(0, z)
    np.save(tmp_path / "p.npy", np.zeros(SHAPE, np.uint8))
    done = {"type": "done", "checkpoint": str(_checkpoint(tmp_path, "r.pt", b"r")),
            "prediction": str(tmp_path / "p.npy"), "uncertainty": None,
            "adopted": False, "reason": "rejected", "old_score": 0.9, "new_score": 0.1,
            "parent": "v0", "method": "supervised", "steps": 3, "extent": [1, 3]}
    _, ok, _ = s.apply_retrain_result(done)
    assert not ok
    assert (s.prediction[[0, 4, 5]] == 0).all()  # beyond the painted ends
    assert (s.prediction[2] == 1).all()  # between them, the kept model's prediction
    assert (s.prediction[[1, 3]] == 2).all() and (s.user_labels[[1, 3]] == 2).all()


def test_a_rejected_retrain_shows_the_kept_model_with_every_painted_slice(tmp_path):
    # the Retrain held slice 3 back to judge the new network; not adopted, the previous model
    # comes back as blended with all the painted slices, slice 3 included
    s = Session(_image(), prediction=np.ones(SHAPE, np.uint8))
    s.add_version(_checkpoint(tmp_path, "base.pt"))
    for z in (1, 3):
        s.prediction[z] = 2
        s.mark_labelled(0, z)
    kept = np.full(SHAPE, 2, np.uint8)
    kept[5] = 0
    np.save(tmp_path / "p.npy", np.zeros(SHAPE, np.uint8))
    np.save(tmp_path / "k.npy", kept)
    unc = np.full(SHAPE, 0.25, np.float32)
    np.save(tmp_path / "ku.npy", unc)
    done = {"type": "done", "checkpoint": str(_checkpoint(tmp_path, "r.pt", b"r")),
            "prediction": str(tmp_path / "p.npy"), "uncertainty": None,
            "kept_prediction": str(tmp_path / "k.npy"),
            "kept_uncertainty": str(tmp_path / "ku.npy"),
            "adopted": False, "reason": "rejected", "old_score": 0.9, "new_score": 0.1,
            "parent": "v0", "method": "supervised", "steps": 3}
    _, ok, _ = s.apply_retrain_result(done)
    assert not ok and s.current == "v0"
    np.testing.assert_array_equal(s.prediction, kept)
    np.testing.assert_array_equal(s.uncertainty, unc)
    # a kept prediction that does not fit the scan changes nothing
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2), np.uint8))
    before = s.prediction.copy()
    with pytest.raises(LabelShapeError):
        s.apply_retrain_result({**done, "kept_prediction": str(tmp_path / "bad.npy")})
    np.testing.assert_array_equal(s.prediction, before)


def test_autosave_and_reopen_restore_everything(tmp_path, scan):
    folder = tmp_path / "session"
    s = Session.from_file(scan, folder=folder,
                          settings=Settings(method="ua_mt", steps=7, axis=0))
    s.add_version(_checkpoint(tmp_path, "base.pt"), method="pretrained")
    unc = np.random.default_rng(3).random(SHAPE).astype(np.float32)
    s.merge_prediction(_random_labels(2), uncertainty=unc)
    s.prediction[1, 2:5, 2:5] = 3
    s.detect_painted_slices(indices=(np.array([1]), np.array([2]), np.array([2])))
    s.accept_slice(2, 4)
    s.add_retrain(_checkpoint(tmp_path, "worse.pt", b"w"), adopted=False, reason="rejected",
                  score=0.2, parent_score=0.8, method="ua_mt")
    # no explicit save: everything above was autosaved; "kill" the process by dropping it
    expected_pred, expected_user = s.prediction.copy(), s.user_labels.copy()
    del s
    r = Session.open(folder)
    assert r.image_path == str(scan)
    assert np.array_equal(r.image, read_volume(scan).data)
    assert r.geometry.spacing == pytest.approx(_geometry().spacing)  # NIfTI keeps float32
    assert r.geometry.origin == pytest.approx(_geometry().origin)
    assert r.labelled_slices() == [(0, 1), (2, 4)]
    assert np.array_equal(r.prediction, expected_pred)
    assert np.array_equal(r.user_labels, expected_user)
    assert np.array_equal(r.uncertainty, unc)
    assert r.settings == Settings(method="ua_mt", steps=7, axis=0)
    assert [(v.id, v.adopted, v.method) for v in r.versions] == [
        ("v0", True, "pretrained"), ("v1", False, "ua_mt")]
    assert r.current == "v0"
    assert Path(r.current_model_path).read_bytes() == b"weights"
    assert Path(r.current_model_path).parent == folder / "models"
    # label files carry the scan's geometry, so they land back on it
    saved = read_volume(folder / "user_labels.nii.gz", as_labels=True)
    assert saved.geometry.spacing == pytest.approx(_geometry().spacing)
    assert saved.geometry.origin == pytest.approx(_geometry().origin)
    # the reopened session keeps the user's voxels through a merge and keeps autosaving
    r.merge_prediction(np.zeros(SHAPE, np.uint8))
    assert r.prediction[1, 3, 3] == 3
    r.accept_slice(0, 5)
    record = json.loads((folder / "session.json").read_text(encoding="utf-8"))
    assert record["labelled_slices"]["0"] == [1, 5]
    leftovers = [p.name for p in folder.iterdir()
                 if p.name.startswith(".") and p.name != LOCK_FILE]
    assert leftovers == []  # atomic writes leave no temporary files


def test_save_as_copies_models_and_in_memory_image(tmp_path):
    s = Session(_image(), _geometry())  # no file, no folder: nothing written yet
    s.add_version(_checkpoint(tmp_path, "base.pt"))
    s.accept_slice(0, 3)
    target = s.save(tmp_path / "saved")
    assert (target / "models" / "v0.pt").read_bytes() == b"weights"
    assert (target / "image.nii.gz").exists()
    r = Session.open(target, autosave=False)
    assert np.allclose(r.image, _image()) and r.labelled_slices() == [(0, 3)]
    with pytest.raises(SessionError):
        Session(_image()).save()


def test_open_reports_clear_errors(tmp_path, scan):
    with pytest.raises(SessionError, match="not a napari-semiseg session"):
        Session.open(tmp_path)
    folder = tmp_path / "s"
    Session.from_file(scan, folder=folder)
    write_volume(scan, np.zeros((3, 3, 3), np.float32), None)
    with pytest.raises(LabelShapeError):
        Session.open(folder)
    scan.unlink()
    with pytest.raises(SessionError, match="missing"):
        Session.open(folder)


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path))
    f = default_folder("/data/patient001_frame01.nii.gz")
    assert f.parent == tmp_path / "sessions" and f.name.startswith("patient001_frame01-")


def test_how_right_the_model_was_where_the_user_painted():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    s = Session(np.zeros((4, 8, 8), np.float32), autosave=False)
    s.mark_labelled(0, 0, truth[0])
    assert s.model_agreement(0, 0) is None  # no model has shown anything yet
    shown = truth.copy()
    shown[1, 2:4] = 0  # the model missed half of slice 1
    s.merge_prediction(shown)
    assert s.model_agreement(0, 2) is None  # not painted
    s.mark_labelled(0, 1, truth[1])
    s.mark_labelled(0, 2, truth[2])
    assert s.model_agreement(0, 1) == pytest.approx(2 / 3)
    assert s.model_agreement(0, 2) == 1.0
    # the layer shows the user's slice, while the model's own is kept for the comparison
    np.testing.assert_array_equal(s.prediction[1], truth[1])


def test_with_the_ends_box_ticked_only_slices_between_the_painted_ends_are_suggested(
        disc_model):
    shape = (12, 16, 16)
    pred = np.zeros(shape, np.uint8)
    pred[2:10, 4:12, 4:12] = 1
    unc = np.full(shape, 0.1, np.float32)
    unc[[0, 1, 10, 11]] = 0.9  # noisy empty slices beyond the structure
    s = Session(np.zeros(shape, np.float32), prediction=pred)
    s.add_version(disc_model, note="start")
    s.merge_prediction(pred, uncertainty=unc)
    s.accept_slice(0, 3)
    assert len(s.ranked_uncertain_slices(within_ends=True)) == 11  # one end: none known yet
    s.accept_slice(0, 8)  # the structure's ends, as the user paints them
    assert sorted(i for i, _ in s.ranked_uncertain_slices(within_ends=True)) == [4, 5, 6, 7]
    assert len(s.ranked_uncertain_slices()) == 10  # unticked: every unlabelled slice
    for z in (4, 5, 6, 7):
        s.accept_slice(0, z)
    # nothing left between the ends: the rest is listed rather than nothing
    assert sorted(i for i, _ in s.ranked_uncertain_slices(within_ends=True)) == [0, 1, 2, 9,
                                                                                   10, 11]

"""Scans the user finished teach every later Retrain (no display needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_semiseg.finished_scans import FinishedScans
from napari_semiseg.retrain_job import make_job, run_retrain
from napari_semiseg.session import Session


def _painted_session(seed: int, path: str | None = None,
                     painted=(1, 4)) -> tuple[Session, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((6, 16, 16), np.uint8)
    truth[:, 4:10, 5:11] = 1
    image = (truth * 3.0 + rng.normal(0, 0.5, truth.shape)).astype(np.float32)
    s = Session(image, image_path=path, autosave=False)
    predicted = truth.copy()
    predicted[:, 9] = 0  # the model missed a row the user did not paint
    s.merge_prediction(predicted)
    for z in painted:
        s.mark_labelled(0, z, truth[z])
    return s, truth


def test_a_finished_scan_keeps_its_painted_slices_and_the_kept_prediction(tmp_path):
    finished = FinishedScans(folder=tmp_path / "finished")
    s, truth = _painted_session(0, "scan-a.nii.gz")
    s.prediction[1, 0, 0] = 1  # the user's last stroke on a painted slice
    assert finished.add(s)
    [(img, seg)] = finished.files()
    np.testing.assert_array_equal(np.load(img), s.image)
    saved = np.load(seg)
    assert saved[1, 0, 0] == 1  # painted slices as the user left them
    np.testing.assert_array_equal(saved[4], truth[4])
    assert not saved[2, 9].any() and saved[2, 5, 6] == 1  # the prediction kept elsewhere
    assert finished.files(exclude="scan-a.nii.gz") == []  # the scan at hand teaches itself


def test_only_painted_scans_are_kept_the_newest_few_each_scan_once(tmp_path):
    finished = FinishedScans(limit=2, folder=tmp_path / "finished")
    unpainted, _ = _painted_session(0, "none.nii.gz", painted=())
    assert not finished.add(unpainted) and len(finished) == 0
    sessions = [_painted_session(i, f"scan{i}.nii.gz")[0] for i in range(3)]
    for s in sessions:
        assert finished.add(s)
    assert len(finished) == 2  # the oldest went, with its files
    kept = [np.load(i) for i, _ in finished.files()]  # once the background writes are done
    assert len(list((tmp_path / "finished").iterdir())) == 4
    np.testing.assert_array_equal(kept[0], sessions[1].image)
    assert finished.add(sessions[1])  # finished again: replaces its earlier entry
    assert len(finished) == 2
    np.testing.assert_array_equal(np.load(finished.files()[-1][0]), sessions[1].image)
    finished.clear()
    assert finished.files() == [] and not list((tmp_path / "finished").iterdir())


def test_a_dock_owned_folder_goes_when_closed():
    finished = FinishedScans()
    folder = finished.folder
    assert folder.is_dir()
    finished.close()
    assert not folder.exists()


def test_the_retrain_trains_on_finished_scans_beside_its_own_slices(tmp_path, monkeypatch):
    from test_new_structure import _scratch_job

    import training.interactive.retrain as retrain

    job, sparse, truth = _scratch_job(tmp_path, steps=1)
    done = Session(np.load(job.image), image_path="done.nii.gz", autosave=False)
    done.merge_prediction(truth)
    done.mark_labelled(0, 3, truth[3])
    finished = FinishedScans(folder=tmp_path / "finished")
    finished.add(done)
    seen = []
    real = retrain.finetune

    def spy(*args, other_labelled=(), **kw):
        seen.append([lab for _, lab in other_labelled])
        return real(*args, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(retrain, "finetune", spy)
    run_retrain(replace(job, finished=finished.files()), lambda e: None, lambda: False)
    assert len(seen) == 1 and len(seen[0]) == 1
    np.testing.assert_array_equal(seen[0][0], truth)  # every slice of the finished scan


def test_a_job_leaves_out_finished_scans_the_model_cannot_read(tmp_path):
    from test_bridge import _tiny_model

    s, _ = _painted_session(0, "grey.nii.gz")
    s.add_version(_tiny_model(tmp_path / "m.pt"))
    grey = tmp_path / "grey.npy"
    rgb = tmp_path / "rgb.npy"
    seg = tmp_path / "seg.npy"
    np.save(grey, s.image)
    np.save(rgb, np.repeat(s.image[..., None], 3, -1))
    np.save(seg, s.prediction)
    job = make_job(s, tmp_path / "jobs", finished=[(str(grey), str(seg)), (str(rgb), str(seg))])
    assert job.finished == [(str(grey), str(seg))]


def test_a_full_disk_leaves_no_half_written_scan_and_keeps_the_earlier_one(tmp_path,
                                                                          monkeypatch):
    import napari_semiseg.finished_scans as module

    finished = FinishedScans(folder=tmp_path / "finished")
    s, _ = _painted_session(0, "scan-a.nii.gz")
    assert finished.add(s)
    before = finished.files()
    real_save = np.save
    calls = []

    def full_disk(path, arr):
        calls.append(path)
        if len(calls) == 2:  # the image went through, the segmentation does not
            raise OSError(28, "No space left on device")
        real_save(path, arr)

    monkeypatch.setattr(module.np, "save", full_disk)
    assert finished.add(s)  # the same scan again: would replace its entry, once written
    assert finished.files() == before  # the earlier entry stays, whole
    [error] = finished.take_errors()
    assert "scan-a.nii.gz" in error and "No space" in error
    assert sorted(p.name for p in (tmp_path / "finished").iterdir()) == sorted(
        Path(p).name for p in before[0])


def test_a_write_that_fails_in_the_background_is_reported_and_leaves_nothing(tmp_path,
                                                                          monkeypatch):
    import napari_semiseg.finished_scans as fs

    finished = FinishedScans(folder=tmp_path / "finished")
    good, _ = _painted_session(0, "good.nii.gz")
    assert finished.add(good)
    assert len(finished.files()) == 1  # written
    real_save = np.save

    def full_disk(path, array):
        if "segmentation" in str(path):
            raise OSError(28, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(fs.np, "save", full_disk)
    bad, _ = _painted_session(1, "/data/bad.nii.gz")
    assert finished.add(bad)  # written in the background: its failure comes later
    assert [Path(i).name for i, _ in finished.files()] == ["scan1-image.npy"]
    [error] = finished.take_errors()
    assert "bad.nii.gz" in error and "No space left" in error
    assert finished.take_errors() == []  # said once
    assert sorted(p.name for p in (tmp_path / "finished").iterdir()) == [
        "scan1-image.npy", "scan1-segmentation.npy"]  # no half-written scan
    finished.close()


def test_a_saved_models_finished_scans_come_back_with_it(tmp_path):
    from napari_semiseg.finished_scans import companion

    finished = FinishedScans(limit=2, folder=tmp_path / "tmp")
    sessions = [_painted_session(i, f"scan{i}.nii.gz")[0] for i in range(3)]
    for s in sessions:
        finished.add(s)
    saved = companion(tmp_path / "models" / "liver.pt")
    assert saved.name == "liver.finished"
    saved.parent.mkdir()
    assert finished.save_to(saved) == 2
    assert not list((tmp_path / "tmp").iterdir())  # the saved copies are read from now on
    again = FinishedScans(limit=2, folder=tmp_path / "tmp2")  # napari restarted
    assert again.adopt(saved) == 2
    for (img, seg), s in zip(again.files(), sessions[1:], strict=True):
        np.testing.assert_array_equal(np.load(img), s.image)
        np.testing.assert_array_equal(np.load(seg), s.finished_segmentation())
    # a new scan pushes the oldest out of the list, never off the saved model's folder
    again.add(_painted_session(5, "scan5.nii.gz")[0])
    assert len(again.files()) == 2
    again.clear()
    assert len(list(saved.glob("*.npy"))) == 4
    # saved again over the same folder: the old copies are replaced, nothing half-written stays
    again.adopt(saved)
    again.add(_painted_session(6, "scan6.nii.gz")[0])
    assert again.save_to(saved) == 2
    assert sorted(p.name for p in saved.parent.iterdir()) == ["liver.finished"]
    assert [Path(i).parent for i, _ in again.files()] == [saved, saved]
    np.testing.assert_array_equal(np.load(again.files()[-1][0]),
                                  _painted_session(6, "scan6.nii.gz")[0].image)
    assert FinishedScans().adopt(tmp_path / "nowhere") == 0
    again.close()
    assert saved.is_dir()  # closing the dock leaves the saved model's scans


def test_the_series_counts_the_slices_painted_on_every_finished_scan(tmp_path):
    # what the user sees the learning save: all the series' scans, not only the kept few
    from napari_semiseg.finished_scans import companion

    finished = FinishedScans(limit=2, folder=tmp_path / "tmp")
    painted = [(0, 1, 2, 4, 5), (1, 4, 5), (2,)]
    for i, slices in enumerate(painted):
        finished.add(_painted_session(i, f"scan{i}.nii.gz", painted=slices)[0])
    assert finished.painted_per_scan() == [5, 3, 1]
    assert finished.painted_per_scan(exclude="scan1.nii.gz") == [5, 1]  # the scan on screen
    again, _ = _painted_session(1, "scan1.nii.gz", painted=(1, 4))  # finished again, 2 now
    finished.add(again)
    assert finished.painted_per_scan() == [5, 2, 1]  # in its place in the series
    saved = companion(tmp_path / "models" / "liver.pt")
    saved.parent.mkdir()
    finished.save_to(saved)
    restarted = FinishedScans(limit=2, folder=tmp_path / "tmp2")
    restarted.adopt(saved)
    assert restarted.painted_per_scan() == [5, 2, 1]
    restarted.clear()  # another model chosen: a series of its own
    assert restarted.painted_per_scan() == []
    (saved / "painted.json").unlink()  # a model saved before the count was kept
    assert restarted.adopt(saved) == 2 and restarted.painted_per_scan() == []
    restarted.close()
    finished.close()


def test_a_scan_finished_again_before_its_first_copy_is_written_keeps_the_new_copy(tmp_path):
    # the older copy's write, checked first, used to drop the newer entry of the same scan:
    # the series then forgot the scan the user had just finished again
    finished = FinishedScans(folder=tmp_path / "finished")
    first, _ = _painted_session(0, "a.nii.gz", painted=(1,))
    other, _ = _painted_session(1, "b.nii.gz")
    again, _ = _painted_session(2, "a.nii.gz", painted=(1, 4))
    for s in (first, other, again):  # no Retrain between: nothing checked the writes
        finished.add(s)
    files = finished.files()
    assert len(files) == 2
    np.testing.assert_array_equal(np.load(files[-1][0]), again.image)
    np.testing.assert_array_equal(np.load(files[-1][1]), again.finished_segmentation())
    finished.close()

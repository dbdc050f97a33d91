"""Autosave on a writer thread: newest copies win, failures are reported, nothing is lost."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from test_session import SHAPE, _geometry, _image, _random_labels

import napari_semiseg.session_files as session_files
from napari_semiseg.autosave import BackgroundWriter
from napari_semiseg.io import WriteError, read_volume
from napari_semiseg.session import Session


def test_newer_parts_supersede_queued_ones_and_failures_retry_with_the_next():
    written: list[dict] = []
    gate = threading.Event()
    errors: list[BaseException] = []
    fail = {"on": False}

    def write(parts: dict) -> None:
        gate.wait(5)
        if fail["on"]:
            raise OSError("disk full")
        written.append(parts)

    w = BackgroundWriter(write, errors.append, lambda: None)
    w.submit({"a": 1})
    w.submit({"a": 2, "b": 1})  # the first write may be running; these wait, merged
    w.submit({"a": 3})
    gate.set()
    assert w.flush(5)
    assert written[-1] == {"a": 3, "b": 1} and len(written) <= 2
    fail["on"] = True
    w.submit({"c": 1})
    assert w.flush(5) and len(errors) == 1
    fail["on"] = False
    w.submit({"d": 1})  # the failed part goes again, under the newer ones
    assert w.flush(5) and written[-1] == {"c": 1, "d": 1}
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.submit({"e": 1})


def test_session_writes_in_background_and_flushes_before_close(tmp_path):
    folder = tmp_path / "s"
    s = Session(_image(), _geometry(), folder=folder)
    s.write_in_background()
    s.merge_prediction(_random_labels(1))
    for z in range(SHAPE[0]):  # strokes faster than the disk: copies, newest wins
        s.prediction[z, 1:3, 1:3] = 2
        s.detect_painted_slices(indices=(np.array([z]), np.array([1]), np.array([1])))
    expected = s.prediction.copy()
    assert s.flush()
    assert np.array_equal(read_volume(folder / session_files.PREDICTION_FILE).data, expected)
    s.prediction[0, 5, 5] = 3
    s.detect_painted_slices(indices=(np.array([0]), np.array([5]), np.array([5])))
    expected = s.prediction.copy()
    s.close()  # writes what is pending before the folder is freed
    r = Session.open(folder)
    assert np.array_equal(r.prediction, expected)
    assert r.labelled_slices(0) == list(range(SHAPE[0]))


def test_a_background_failure_is_reported_once_and_retried(tmp_path, monkeypatch):
    s = Session(_image(), _geometry(), folder=tmp_path / "s")
    s.write_in_background()
    seen: list[tuple[str, str]] = []
    s.on_autosave_error = lambda m: seen.append((m, threading.current_thread().name))
    real = session_files.write_volume

    def full(path, *a, **k):
        raise WriteError(f"cannot write {path}: the disk is full")

    monkeypatch.setattr(session_files, "write_volume", full)
    for z in (1, 2):
        s.prediction[z, 0, 0] = 1
        s.detect_painted_slices(indices=(np.array([z]), np.array([0]), np.array([0])))
        s.flush()
    assert len(seen) == 1 and "disk is full" in seen[0][0]
    assert seen[0][1] == "semiseg-autosave"  # the widget marshals it to the UI thread
    monkeypatch.setattr(session_files, "write_volume", real)
    s.prediction[3, 0, 0] = 1
    s.detect_painted_slices(indices=(np.array([3]), np.array([0]), np.array([0])))
    assert s.flush() and s.autosave_error is None
    assert Session.open(tmp_path / "s", autosave=False).labelled_slices(0) == [1, 2, 3]
    s.close()


def test_a_dropped_session_with_a_writer_frees_its_folder(tmp_path):
    folder = tmp_path / "s"
    s = Session(_image(), _geometry(), folder=folder)
    s.write_in_background()
    s.flush()
    del s
    gc.collect()
    Session.open(folder).close()  # no FolderLockedError: the writer thread kept nothing alive

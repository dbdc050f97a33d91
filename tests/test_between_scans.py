"""Training between scans: the carried model learns more from the finished scans while the
user opens the next one, in the training process (no display needed)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from test_bridge import _tiny_model
from test_finished_scans import _painted_session

from napari_semiseg.between_scans import BetweenScans, BetweenScansJob, run_between_scans
from napari_semiseg.finished_scans import FinishedScans
from napari_semiseg.session import Session
from napari_semiseg.training_bridge import TrainingBridge
from training.interactive.between_scans import train_between_scans


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _finished(tmp_path, n: int = 2) -> list[tuple[str, str]]:
    kept = FinishedScans(folder=tmp_path / "finished")
    for i in range(n):
        kept.add(_painted_session(i, f"scan{i}.nii.gz")[0])
    return kept.files()


def test_the_model_trains_on_every_finished_scan_the_last_one_first(tmp_path, monkeypatch):
    import training.interactive.between_scans as between

    seen = []
    real = between.finetune

    def spy(model, image, labels, *args, other_labelled=(), **kw):
        seen.append((labels, [lab for _, lab in other_labelled], kw["steps"]))
        return real(model, image, labels, *args, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(between, "finetune", spy)
    model = _tiny_model(tmp_path / "m.pt")
    pairs = [(np.load(i), np.load(s)) for i, s in _finished(tmp_path)]
    out = train_between_scans(model, pairs, tmp_path / "out.pt", 3, labeled_bs=2,
                              unlabeled_bs=0)
    assert out == str(tmp_path / "out.pt") and _digest(out) != _digest(model)
    [(labels, others, steps)] = seen
    assert steps == 3
    np.testing.assert_array_equal(labels, pairs[-1][1])  # the scan just left
    assert len(others) == 1
    np.testing.assert_array_equal(others[0], pairs[0][1])
    with pytest.raises(ValueError, match="no finished scan"):
        train_between_scans(model, [], tmp_path / "none.pt", 3)


def test_the_child_target_sends_progress_then_its_model(tmp_path):
    job = BetweenScansJob(_tiny_model(tmp_path / "m.pt"), _finished(tmp_path, 1),
                          str(tmp_path), steps=3)
    events: list[dict] = []
    run_between_scans(job, events.append, lambda: False)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "done" and "progress" in kinds
    assert "cancelled" not in kinds  # the trainer's own end events stay inside
    assert events[-1]["steps_done"] == 3 and not events[-1]["stopped"]
    assert Path(events[-1]["checkpoint"]).is_file()


def test_a_stopped_run_keeps_the_steps_trained_so_far(tmp_path):
    job = BetweenScansJob(_tiny_model(tmp_path / "m.pt"), _finished(tmp_path, 1),
                          str(tmp_path), steps=50)
    events: list[dict] = []
    run_between_scans(job, events.append,
                      lambda: sum(e["type"] == "progress" for e in events) >= 2)
    done = events[-1]
    assert done["type"] == "done" and done["stopped"] and 0 < done["steps_done"] < 50
    assert Path(done["checkpoint"]).is_file()
    events.clear()
    run_between_scans(job, events.append, lambda: True)  # stopped before any step
    assert events[-1]["type"] == "cancelled"


def _next_scan(model: str) -> Session:
    """The next scan's session, started from ``model``."""
    s = Session(np.zeros((4, 16, 16), np.float32), autosave=False)
    s.add_version(model, note="starting model")
    return s


def _wait(between: BetweenScans, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        landed = between.poll()
        if landed is not None:
            return landed
        time.sleep(0.05)
    raise TimeoutError("the run did not end")


def test_the_run_becomes_the_next_scans_version_only_if_it_still_starts_there(tmp_path):
    """In the training process, as the dock runs it: the next scan's session gets the model
    as a new current version, with the steps in its note; a session that moved on meanwhile
    (another version in use) is left as it is."""
    model = _tiny_model(tmp_path / "m.pt")
    files = _finished(tmp_path)
    bridge = TrainingBridge(run_between_scans)  # the dock passes its Retrain's bridge
    try:
        between = BetweenScans(bridge, steps=4, work_dir=tmp_path)
        nxt = _next_scan(model)
        assert between.start(model, [], "supervised", nxt) is None  # nothing finished
        job = between.start(model, files, "supervised", nxt)
        assert job is not None and between.running and job.finished == files
        with pytest.raises(RuntimeError):  # one training at a time
            between.start(model, files, "supervised", nxt)
        landed = _wait(between)
        assert not between.running and landed.error is None and landed.steps_done == 4
        assert landed.n_scans == 2 and landed.from_model == model
        version = landed.add_to(nxt)
        assert version is not None and nxt.current == version.id
        assert "4 steps between scans on 2 finished scan(s)" in version.note
        assert _digest(nxt.current_model_path) == _digest(landed.checkpoint)

        moved = _next_scan(model)
        between.start(model, files, "supervised", moved)
        moved.add_version(model, note="loaded by the user")  # another version in use
        landed = _wait(between)
        assert landed.add_to(moved) is None and moved.current == "v1"
        assert landed.add_to(nxt) is None  # not the session it was started for
    finally:
        bridge.close()


def test_a_discarded_run_is_not_carried_and_steps_zero_turns_it_off(tmp_path):
    model = _tiny_model(tmp_path / "m.pt")
    files = _finished(tmp_path, 1)
    bridge = TrainingBridge(run_between_scans)
    try:
        between = BetweenScans(bridge, steps=2000, work_dir=tmp_path)
        nxt = _next_scan(model)
        between.start(model, files, "supervised", nxt)
        while between.progress is None:  # stopped once training is under way
            assert between.poll() is None
            time.sleep(0.05)
        between.stop(discard=True)
        landed = _wait(between)
        assert landed.discarded and landed.add_to(nxt) is None and nxt.current == "v0"
        assert landed.steps_done < 2000
        assert BetweenScans(bridge, steps=0).start(model, files, "supervised") is None
    finally:
        bridge.close()


def test_a_failed_run_says_why_and_carries_nothing(tmp_path):
    """A finished scan's file gone before the run read it: the run ends with an error that
    names the cause, and no version is made of it."""
    model = _tiny_model(tmp_path / "m.pt")
    files = _finished(tmp_path, 1)
    Path(files[0][1]).unlink()
    bridge = TrainingBridge(run_between_scans)
    try:
        between = BetweenScans(bridge, steps=3, work_dir=tmp_path)
        nxt = _next_scan(model)
        between.start(model, files, "supervised", nxt)
        landed = _wait(between)
        assert landed.checkpoint is None and landed.error
        assert "segmentation.npy" in landed.error or "No such file" in landed.error
        assert landed.add_to(nxt) is None and nxt.current == "v0"
    finally:
        bridge.close()

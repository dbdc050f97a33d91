"""The training bridge: a real child process streams events; cancel and crashes keep the model."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from napari_semiseg.session import NoLabelledSlicesError, Session, SessionError, Settings
from napari_semiseg.training_bridge import (
    RetrainJob,
    TrainingBridge,
    discard_job,
    error_event,
    is_out_of_memory,
    make_job,
)
from training.loop import score_slices

# ----- child targets (module level so the spawned process can import them; no torch here, so
# these children start fast) -------------------------------------------------------------------


def _progress(step: int = 1) -> dict:
    return {"type": "progress", "step": step, "total": 10, "losses": {"loss": 1.0},
            "elapsed": 0.0, "eta": 1.0}


def raising_target(job, emit, should_stop):
    emit(_progress())
    raise RuntimeError("the network exploded")


def oom_target(job, emit, should_stop):
    raise MemoryError("DefaultCPUAllocator: can't allocate memory")


def silent_exit_target(job, emit, should_stop):
    emit(_progress())
    os._exit(3)


def waiting_target(job, emit, should_stop):
    """Emits one progress event, then waits to be killed (ignores cancel on purpose)."""
    emit(_progress())
    while True:
        time.sleep(0.05)


def cooperative_target(job, emit, should_stop):
    emit(_progress())
    while not should_stop():
        time.sleep(0.02)
    emit({"type": "cancelled", "message": "stopped"})


# ----- helpers --------------------------------------------------------------------------------


def _tiny_model(path: Path) -> str:
    import torch

    from training.checkpoint import save_checkpoint
    from training.networks import UNet

    torch.manual_seed(0)
    meta = {"num_classes": 2, "class_names": ["background", "disc"], "dims": 2,
            "size": [32, 32],
            "normalization": {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}}
    return save_checkpoint(path, UNet(2, 1, 2, base=4, depth=2), meta)


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def session(tmp_path) -> Session:
    from training.simulate import synthetic_case

    image, truth = synthetic_case((6, 32, 32), seed=2)
    # tolerance 1: adopt whatever comes back, so the test does not hang on a tiny net's luck
    s = Session(image, folder=tmp_path / "session", settings=Settings(
        method="supervised", steps=4, tolerance=1.0))
    s.add_version(_tiny_model(tmp_path / "base.pt"), method="pretrained")
    s.merge_prediction(np.zeros_like(truth))
    for i in (0, 2, 4):
        s.mark_labelled(0, i, truth[i])
    return s


def _wait_for(bridge: TrainingBridge, kind: str, timeout: float = 120) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not any(e["type"] == kind for e in events):
        assert bridge.running, f"run ended before a {kind!r} event: {events}"
        assert time.monotonic() < deadline, f"no {kind!r} event: {events}"
        events += bridge.poll()
        time.sleep(0.05)
    return events


def _job(tmp_path) -> RetrainJob:
    return RetrainJob(model_path="unused.pt", image="", labels="", out_dir=str(tmp_path))


# ----- tests ----------------------------------------------------------------------------------


def test_real_child_streams_progress_and_result(session, tmp_path):
    labelled_before = session.prediction[[0, 2, 4]].copy()
    job = make_job(session, tmp_path / "job", steps=4, preview_every=2, labeled_bs=2,
                   unlabeled_bs=2, device="cpu")
    assert len(job.held_back) == 1 and job.parent == "v0"
    bridge = TrainingBridge()
    bridge.start(job)
    assert bridge.running
    with pytest.raises(RuntimeError, match="already running"):
        bridge.start(job)
    events = bridge.wait(timeout=300)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "error" not in kinds
    assert events[0]["pid"] != os.getpid()  # it really ran in another process
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == [1, 2, 3, 4]
    assert all(np.isfinite(e["losses"]["loss"]) for e in events if e["type"] == "progress")
    preview = next(e for e in events if e["type"] == "prediction")
    assert preview["step"] == 2 and np.load(preview["path"]).shape == session.shape
    done = events[-1]
    # the judgement is computed on the held-back slice, from the saved prediction
    reference = session.training_labels(job.held_back)
    assert done["new_scores"] == score_slices(np.load(done["prediction"]), reference,
                                              job.held_back)
    assert not bridge.running and bridge.poll() == []

    session.preview_prediction(np.load(preview["path"]))
    v, ok, _ = session.apply_retrain_result(done)
    assert ok and session.current == v.id == "v1" and v.parent == "v0"
    assert v.method == "supervised" and v.steps == 4
    assert Path(session.current_model_path).is_file()
    assert np.array_equal(session.prediction[[0, 2, 4]], labelled_before)
    new = np.load(done["prediction"])
    assert np.array_equal(session.prediction[[1, 3, 5]], new[[1, 3, 5]])
    discard_job(job)
    assert not Path(job.out_dir).exists() and Path(session.current_model_path).is_file()


def test_cancel_keeps_the_current_version(session, tmp_path):
    model_digest = _digest(session.current_model_path)
    job = make_job(session, tmp_path / "job", steps=100_000, preview_every=0, labeled_bs=2,
                   unlabeled_bs=2, device="cpu")
    bridge = TrainingBridge()
    bridge.start(job)
    events = _wait_for(bridge, "progress")
    bridge.cancel()
    events += bridge.wait(timeout=120)
    assert events[-1]["type"] == "cancelled"
    assert "done" not in [e["type"] for e in events]
    assert session.current == "v0" and len(session.versions) == 1
    assert _digest(session.current_model_path) == model_digest


def test_crashing_child_reports_an_error(tmp_path):
    bridge = TrainingBridge(target=raising_target)
    bridge.start(_job(tmp_path))
    events = bridge.wait(timeout=60)
    assert [e["type"] for e in events] == ["started", "progress", "error"]
    assert events[-1]["kind"] == "exception"
    assert "the network exploded" in events[-1]["message"]
    assert "RuntimeError" in events[-1]["traceback"]


def test_out_of_memory_is_named(tmp_path):
    bridge = TrainingBridge(target=oom_target)
    bridge.start(_job(tmp_path))
    err = bridge.wait(timeout=60)[-1]
    assert err["type"] == "error" and err["kind"] == "oom"
    assert "out of memory" in err["message"]
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert error_event(NoLabelledSlicesError("label a slice"))["kind"] == "data"


def test_killed_child_is_detected_and_session_untouched(session, tmp_path):
    model_digest = _digest(session.current_model_path)
    before = session.prediction.copy()
    bridge = TrainingBridge(target=waiting_target)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    session.preview_prediction(np.ones_like(before))
    os.kill(bridge.pid, signal.SIGKILL)  # what the kernel's OOM killer does
    events = bridge.wait(timeout=60)
    err = events[-1]
    assert err["type"] == "error" and err["exitcode"] == -signal.SIGKILL
    assert "killed" in err["message"] and "memory" in err["message"]
    session.restore_prediction()
    assert np.array_equal(session.prediction, before)
    assert session.current == "v0" and len(session.versions) == 1
    assert _digest(session.current_model_path) == model_digest


def test_child_exiting_without_result_is_an_error(tmp_path):
    bridge = TrainingBridge(target=silent_exit_target)
    bridge.start(_job(tmp_path))
    err = bridge.wait(timeout=60)[-1]
    assert err["type"] == "error" and err["kind"] == "crash" and err["exitcode"] == 3


def test_cancel_is_enforced_when_the_child_ignores_it(tmp_path):
    bridge = TrainingBridge(target=waiting_target, cancel_grace_s=0.0)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    bridge.cancel()
    assert bridge.wait(timeout=60)[-1]["type"] == "cancelled"
    # and a cooperative child stops by itself; the bridge can be reused
    bridge = TrainingBridge(target=cooperative_target)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    bridge.cancel()
    assert bridge.wait(timeout=60)[-1] == {"type": "cancelled", "message": "stopped"}


def test_make_job_needs_labels_and_a_model(tmp_path):
    s = Session(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(SessionError, match="no model"):
        make_job(s, tmp_path)
    s.add_version(_tiny_model(tmp_path / "m.pt"))
    with pytest.raises(NoLabelledSlicesError):
        make_job(s, tmp_path)

"""The training bridge: a real child process streams events; cancel and crashes keep the model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_semiseg import training_bridge
from napari_semiseg.framing import error_event, is_out_of_memory
from napari_semiseg.jobs import discard_job
from napari_semiseg.retrain_job import RetrainJob, make_job, run_retrain
from napari_semiseg.session import NoLabelledSlicesError, Session, SessionError, Settings
from napari_semiseg.training_bridge import TrainingBridge, target_reference
from napari_semiseg.weak_job import run_weak
from training.interactive.retrain import score_slices

# ----- child targets (module level so the child process can import them by name; no torch
# here, so these children start fast) ---------------------------------------------------------


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


def noisy_target(job, emit, should_stop):
    """Writes junk to stdout every way a library might, between events."""
    emit(_progress(1))
    print("a library chatting on stdout " * 2000, end="", flush=True)
    os.write(1, b"\x00\xffSSEG raw bytes on fd 1")
    subprocess.run([sys.executable, "-c", "print('a grandchild printing')"], check=True)
    emit(_progress(2))
    emit({"type": "done", "blob": bytes(range(256)) * 4096})  # 1 MiB: bigger than a pipe


def probe_target(job, emit, should_stop):
    """Reports what the child process looks like from inside."""
    main = sys.modules["__main__"]
    emit({"type": "done", "main": getattr(main.__spec__, "name", None),
          "qt": sorted(m for m in sys.modules if m.split(".")[0] in ("PyQt5", "PyQt6",
                                                                      "PySide2", "PySide6",
                                                                      "qtpy", "napari")),
          "display": os.environ.get("DISPLAY"), "omp": os.environ.get("OMP_NUM_THREADS"),
          "nice": os.nice(0), "sys_path": list(sys.path), "job": job})


def quick_target(job, emit, should_stop):
    emit({"type": "done", "job": job})


def torch_threads_target(job, emit, should_stop):
    import torch

    emit({"type": "done", "threads": torch.get_num_threads()})


# ----- helpers --------------------------------------------------------------------------------


def _tiny_model(path: Path) -> str:
    import torch

    from training.engine.checkpoint import save_checkpoint
    from training.engine.networks import UNet

    torch.manual_seed(0)
    meta = {"num_classes": 2, "class_names": ["background", "disc"], "dims": 2,
            "size": [32, 32],
            "normalization": {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}}
    return save_checkpoint(path, UNet(2, 1, 2, base=4, depth=2), meta)


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def session(tmp_path) -> Session:
    from training.bench.simulate import synthetic_case

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
    bridge = TrainingBridge(run_retrain)
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
    assert bridge._proc.wait(timeout=60) == 0  # torch and all, the child exits cleanly

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
    bridge = TrainingBridge(run_retrain)
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


def test_killed_child_is_detected_and_session_untouched(session, tmp_path, monkeypatch):
    # no sign of an out-of-memory kill, whatever else runs on this machine meanwhile
    monkeypatch.setattr(training_bridge, "_oom_kills", lambda: (7, None))
    model_digest = _digest(session.current_model_path)
    before = session.prediction.copy()
    bridge = TrainingBridge(target=waiting_target)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    session.preview_prediction(np.ones_like(before))
    os.kill(bridge.pid, signal.SIGKILL)  # what the kernel's OOM killer does, among others
    events = bridge.wait(timeout=60)
    err = events[-1]
    assert err["type"] == "error" and err["exitcode"] == -signal.SIGKILL
    assert "killed" in err["message"]
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


# ----- the child process itself ---------------------------------------------------------------

_TINY_MODULE = '''
def tiny(job, emit, should_stop):
    emit({"type": "progress", "step": 1, "total": 1, "losses": {}, "elapsed": 0.0, "eta": 0.0})
    print("a stray print in the child")
    emit({"type": "done", "answer": job["x"] * 2})
'''

# what a napari example script looks like: no `if __name__ == "__main__":` guard
_USER_SCRIPT = '''
import json, sys
with open({marker!r}, "a") as f:
    f.write("imported\\n")
sys.path.insert(0, {module_dir!r})
import semiseg_tiny_target
from napari_semiseg.training_bridge import TrainingBridge
bridge = TrainingBridge(target=semiseg_tiny_target.tiny, threads=1)
bridge.start({{"x": 21}})
events = bridge.wait(timeout=120)
print("EVENTS " + json.dumps([e["type"] for e in events]))
print("RESULT " + json.dumps(events[-1]))
'''


@pytest.mark.parametrize("how", ["script", "-c"])
def test_unguarded_user_script_is_not_run_again_in_the_child(tmp_path, how):
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "semiseg_tiny_target.py").write_text(_TINY_MODULE)
    marker = tmp_path / "marker.txt"
    code = _USER_SCRIPT.format(marker=str(marker), module_dir=str(module_dir))
    if how == "script":
        script = tmp_path / "user_script.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-c", code]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    print(res.stdout, res.stderr)
    assert res.returncode == 0, res.stderr
    assert marker.read_text().splitlines() == ["imported"]  # once: the parent's import only
    lines = res.stdout.splitlines()
    kinds = json.loads(next(x for x in lines if x.startswith("EVENTS "))[7:])
    result = json.loads(next(x for x in lines if x.startswith("RESULT "))[7:])
    assert kinds == ["started", "progress", "done"]
    assert result == {"type": "done", "answer": 42}
    assert "a stray print in the child" in res.stderr  # a stray print is not lost, nor harmful


def test_child_is_its_own_headless_program(tmp_path):
    bridge = TrainingBridge(target=probe_target, threads=1)
    bridge.start({"job": 1})
    done = bridge.wait(timeout=60)[-1]
    assert done["type"] == "done" and done["job"] == {"job": 1}
    assert done["main"] == "napari_semiseg._training_child"  # not this test's __main__
    assert done["qt"] == [] and done["display"] is None and done["omp"] == "1"
    assert done["nice"] >= os.nice(0) + 5 or done["nice"] == 19
    assert done["sys_path"][: len(sys.path)] == sys.path
    assert bridge._proc.wait(timeout=30) == 0  # and it exits cleanly


def test_stray_stdout_in_the_child_does_not_corrupt_events(tmp_path):
    bridge = TrainingBridge(target=noisy_target)
    bridge.start(_job(tmp_path))
    events = bridge.wait(timeout=60)
    assert [e["type"] for e in events] == ["started", "progress", "progress", "done"]
    assert [e["step"] for e in events[1:3]] == [1, 2]
    assert events[-1]["blob"] == bytes(range(256)) * 4096


def test_targets_are_sent_by_name():
    assert target_reference(run_retrain) == "napari_semiseg.retrain_job:run_retrain"
    assert target_reference(run_weak) == "napari_semiseg.weak_job:run_weak"
    assert target_reference(quick_target).endswith(":quick_target")


def test_a_start_that_fails_leaves_the_bridge_idle(tmp_path, monkeypatch):
    def local_target(job, emit, should_stop):
        emit({"type": "done"})

    def main_target(job, emit, should_stop):
        emit({"type": "done"})

    main_target.__module__ = "__main__"  # as if defined in a script, `python -c` or a notebook
    for target in (lambda job, emit, stop: None, local_target, main_target):
        bridge = TrainingBridge(target=target)
        with pytest.raises(ValueError, match="importable module"):
            bridge.start(_job(tmp_path))
        assert not bridge.running and bridge.pid is None and bridge.poll() == []

    bridge = TrainingBridge(target=quick_target)

    def no_process(*args, **kwargs):
        raise OSError("fork failed: resource temporarily unavailable")

    monkeypatch.setattr(training_bridge.subprocess, "Popen", no_process)
    with pytest.raises(OSError, match="fork failed"):
        bridge.start(_job(tmp_path))
    assert not bridge.running and bridge.pid is None and bridge.poll() == []
    monkeypatch.undo()
    bridge.start("again")  # the same bridge works once the system does
    assert bridge.wait(timeout=60)[-1] == {"type": "done", "job": "again"}


def test_child_stops_when_the_napari_process_goes_away(tmp_path):
    # closing the child's stdin is what the napari process dying does
    bridge = TrainingBridge(target=cooperative_target)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    bridge._proc.stdin.close()
    assert bridge.wait(timeout=60)[-1] == {"type": "cancelled", "message": "stopped"}
    # a target that ignores the request is ended by the child itself after the grace period
    bridge = TrainingBridge(target=waiting_target, cancel_grace_s=0.5)
    bridge.start(_job(tmp_path))
    _wait_for(bridge, "progress", timeout=60)
    proc = bridge._proc
    proc.stdin.close()
    last = bridge.wait(timeout=60)[-1]
    assert last["type"] == "cancelled" and "went away" in last["message"]
    assert proc.wait(timeout=10) == 1


def test_sigkill_is_called_out_of_memory_only_with_evidence(monkeypatch):
    # the counters read on this machine: whole numbers, or unknown where unreadable
    assert all(c is None or c >= 0 for c in training_bridge._oom_kills())
    bridge = TrainingBridge(target=quick_target)
    bridge._oom_before = (3, None)
    monkeypatch.setattr(training_bridge, "_oom_kills", lambda: (3, None))
    err = bridge._death_event(-signal.SIGKILL)
    assert err["kind"] == "killed" and "SIGKILL" in err["message"]
    assert "ran out of memory and killed" not in err["message"]
    bridge._memory = (2 * 2**30, 8 * 2**30, 16 * 2**30)  # plenty was free at the last look
    assert bridge._death_event(-signal.SIGKILL)["kind"] == "killed"
    assert "2.0 GiB" in bridge._death_event(-signal.SIGKILL)["message"]
    bridge._memory = (15 * 2**30, 2**28, 16 * 2**30)  # nearly nothing was free
    err = bridge._death_event(-signal.SIGKILL)
    assert err["kind"] == "oom" and "0.2 GiB of 16.0 GiB" in err["message"]
    bridge._memory = None
    monkeypatch.setattr(training_bridge, "_oom_kills", lambda: (4, None))  # the kernel's killer
    err = bridge._death_event(-signal.SIGKILL)
    assert err["kind"] == "oom" and "out-of-memory killer" in err["message"]
    assert bridge._death_event(-signal.SIGSEGV)["kind"] == "crash"


def test_a_spare_process_made_ready_ahead_runs_the_next_job(tmp_path):
    """prepare() starts the process before Retrain, so its imports are done by then."""
    bridge = TrainingBridge(target=cooperative_target, preload=("json",))
    bridge.prepare()
    spare = bridge._spare
    assert spare is not None and spare.poll() is None
    bridge.prepare()  # one spare is enough
    assert bridge._spare is spare
    bridge.start(_job(tmp_path))
    first = _wait_for(bridge, "progress")
    assert first[0]["type"] == "started" and first[0]["pid"] == spare.pid
    bridge.prepare()  # no second process while a run goes on
    assert bridge._spare is None
    bridge.cancel()
    assert bridge.wait(timeout=60)[-1]["type"] == "cancelled"
    bridge.prepare()
    assert bridge._spare is not None and bridge._spare.pid != spare.pid
    left = bridge._spare
    bridge.close()  # closing the dock ends the spare too, at once
    assert left.poll() is not None


def test_a_spare_that_died_is_replaced_at_start(tmp_path):
    bridge = TrainingBridge(target=cooperative_target, preload=("json",))
    bridge.prepare()
    dead = bridge._spare
    dead.kill()
    dead.wait(timeout=30)
    bridge.start(_job(tmp_path))
    events = _wait_for(bridge, "progress")
    assert events[0]["pid"] != dead.pid
    bridge.cancel()
    assert bridge.wait(timeout=60)[-1]["type"] == "cancelled"
    bridge.close()


def test_the_painted_extent_is_taken_from_every_painted_slice(session, tmp_path, monkeypatch):
    from training.interactive.loop import painted_extent

    assert painted_extent(session.training_labels()) == (0, 4)
    # the last painted slice is held back to judge the Retrain: it still marks the end
    monkeypatch.setattr(session, "held_back_split",
                        lambda seed=None: ([(0, 0), (0, 2)], [(0, 4)]))
    assert painted_extent(session.training_labels([(0, 0), (0, 2)])) == (0, 2)
    job = make_job(session, tmp_path / "with", within_extent=True)
    assert job.held_back == [(0, 4)] and job.extent == [0, 4]
    assert make_job(session, tmp_path / "without").extent is None


def test_one_painted_slice_does_not_bound_the_structure(session, tmp_path):
    # kept within one slice, a Retrain would erase a library model's prediction on all others
    from training.interactive.loop import retrain_extent

    for z in (2, 4):
        session.unmark_labelled(0, z)
    assert session.labelled_slices(0) == [0]
    assert make_job(session, tmp_path / "one", within_extent=True).extent is None
    assert retrain_extent(session.training_labels()) is None


def test_the_user_is_told_when_the_ends_cut_the_prediction(session, tmp_path):
    from training.interactive.loop import shows_beyond

    extent = make_job(session, tmp_path / "job", within_extent=True).extent
    assert extent == [0, 4]
    assert not shows_beyond(session.prediction, extent)  # nothing predicted beyond 0..4
    session.prediction[5] = 1  # the model shows the structure on slice 5 too
    assert shows_beyond(session.prediction, extent)
    session.prediction[5] = 255  # "not annotated" is not a structure
    assert not shows_beyond(session.prediction, extent)


@pytest.mark.parametrize("preload", [(), ("torch",)])
def test_every_target_trains_on_the_threads_the_bridge_gives_it(preload):
    """Told once by the child, whether torch was imported ahead of the job (a spare process)
    or by the target: no target sets it itself."""
    bridge = TrainingBridge(target=torch_threads_target, threads=1, preload=preload)
    try:
        bridge.prepare()
        bridge.start({})
        assert bridge.wait(timeout=120)[-1]["threads"] == 1
    finally:
        bridge.close()

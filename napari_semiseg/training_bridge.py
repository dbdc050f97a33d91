"""Run a retrain in a separate process and stream its events back, without ever blocking the UI.

Training in a thread of the napari process would share the GIL with Qt and freeze the window
(micro-sam #740, napari #1495). Here the fine-tune runs in a child started with the ``spawn``
context (no forked Qt state), at a lower priority and with one core left to the UI. The child
sends plain-dict events over a queue; the widget calls :meth:`TrainingBridge.poll` from a timer.

Events (all plain dicts with a ``"type"``):

- ``started`` (pid), ``progress`` (step, total, losses, elapsed, eta), ``checkpoint`` (path,
  step): as the engine emits them;
- ``prediction`` (path, uncertainty, step): a mid-training prediction saved as ``.npy``;
- ``done``: the result, see :func:`run_retrain`; terminal;
- ``cancelled`` (message); terminal;
- ``error`` (message, kind = ``oom`` | ``crash`` | ``exception`` | ``data``); terminal.

A cancelled or failed run produces no model version: the session's current version is untouched.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Event = dict[str, Any]
Target = Callable[[Any, Callable[[Event], None], Callable[[], bool]], None]
TERMINAL = ("done", "cancelled", "error")


# ----- the job ------------------------------------------------------------------------------------


@dataclass
class RetrainJob:
    """Everything the child needs, as file paths and plain values (cheap to send to a process).

    ``labels`` holds the user's voxels on the training slices only (255 elsewhere);
    ``reference`` holds them on the ``held_back`` slices, which judge the retrain.
    """

    model_path: str
    image: str
    labels: str
    out_dir: str
    reference: str | None = None
    held_back: list[tuple[int, int]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    method: str = "mean_teacher"
    steps: int = 50
    parent: str | None = None
    seed: int = 0
    device: str | None = None
    mc_samples: int = 0
    preview_every: int = 0  # steps between mid-training predictions; 0 = none
    tolerance: float = 0.0  # Dice a retrain may lose on held-back slices and still be adopted
    config: dict = field(default_factory=dict)  # extra training.trainer.TrainConfig fields

    def to_dict(self) -> dict:
        return asdict(self)


def make_job(
    session: Any,
    work_dir: str | os.PathLike | None = None,
    unlabelled_volumes: Sequence[np.ndarray] = (),
    *,
    method: str | None = None,
    steps: int | None = None,
    preview_every: int | None = None,
    device: str | None = None,
    **config: Any,
) -> RetrainJob:
    """Snapshot a :class:`napari_semiseg.session.Session` into a job folder.

    Raises :class:`training.loop.NoLabelledSlicesError` when nothing is labelled and
    ``SessionError`` when the session has no model. The user can keep painting afterwards:
    the job trains on the labels as they were when Retrain was clicked.
    """
    model_path = session.current_model_path
    if model_path is None:
        from napari_semiseg.session import SessionError

        raise SessionError("no model to retrain: run Predict with a model first")
    train_slices, held = session.held_back_split()
    if work_dir is None:
        base = session.folder / "jobs" if session.folder is not None else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        work_dir = tempfile.mkdtemp(prefix="retrain-", dir=base)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "image.npy", session.image)
    np.save(out / "labels.npy", session.training_labels(train_slices))
    reference = None
    if held:
        reference = str(out / "reference.npy")
        np.save(reference, session.training_labels(held))
    unl = []
    for k, vol in enumerate(unlabelled_volumes):
        p = out / f"unlabelled{k}.npy"
        np.save(p, np.asarray(vol))
        unl.append(str(p))
    steps = int(steps if steps is not None else session.settings.steps)
    return RetrainJob(
        model_path=str(model_path), image=str(out / "image.npy"),
        labels=str(out / "labels.npy"), out_dir=str(out), reference=reference,
        held_back=[tuple(s) for s in held], unlabelled=unl,
        method=method or session.settings.method, steps=steps, parent=session.current,
        seed=session.settings.seed, device=device, mc_samples=session.settings.mc_samples,
        preview_every=(max(1, steps // 2) if preview_every is None else int(preview_every)),
        tolerance=session.settings.tolerance,
        config=dict(config),
    )


# ----- the child side -----------------------------------------------------------------------------


def run_retrain(job: RetrainJob, emit: Callable[[Event], None],
                should_stop: Callable[[], bool]) -> None:
    """Fine-tune, predict, and judge the new model on the held-back slices (child process).

    Ends with one ``done`` event: ``checkpoint``, ``prediction`` and ``uncertainty`` (``.npy``
    paths), ``old_scores`` / ``new_scores`` (Dice per held-back slice), ``accepted``, ``reason``,
    ``parent``, ``method``, ``steps``. Or with ``cancelled``.
    """
    import torch

    from training.checkpoint import load_checkpoint
    from training.inference import predict_volume
    from training.loop import accept_retrain, finetune, score_slices

    if os.environ.get("OMP_NUM_THREADS"):  # set by the bridge in its child
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = Path(job.out_dir)
    image = np.load(job.image)
    labels = np.load(job.labels)
    unlabelled = [np.load(p) for p in job.unlabelled]
    reference = np.load(job.reference) if job.reference else None

    def predict(path: str, tag: str) -> tuple[np.ndarray, str, str]:
        model, meta = load_checkpoint(path, device=job.device)
        res = predict_volume(model, meta, image, mc_samples=job.mc_samples, device=job.device)
        pred_path, unc_path = out / f"prediction-{tag}.npy", out / f"uncertainty-{tag}.npy"
        np.save(pred_path, res["labels"])
        np.save(unc_path, res["uncertainty"])
        return res["labels"], str(pred_path), str(unc_path)

    old_scores: dict = {}
    if reference is not None:  # the parent's Dice on the held-back slices, for the judgement
        old_pred, _, _ = predict(job.model_path, "before")
        old_scores = score_slices(old_pred, reference, job.held_back)

    state = {"cancelled": False}

    def on_event(ev: Event) -> None:
        kind = ev.get("type")
        if kind == "cancelled":
            state["cancelled"] = True
            return
        if kind == "done":  # training finished; our own done comes after the judgement
            return
        emit(ev)
        if kind == "checkpoint" and ev.get("path") and job.preview_every:
            _, p, u = predict(ev["path"], f"step{ev['step']}")
            emit({"type": "prediction", "path": p, "uncertainty": u, "step": ev["step"]})

    config = dict(job.config)
    if job.preview_every and job.preview_every < job.steps:
        config.setdefault("checkpoint_every", job.preview_every)
    ckpt = finetune(
        job.model_path, image, labels, unlabelled, method=job.method, steps=job.steps,
        out_path=out / "model.pt", seed=job.seed, device=job.device, on_event=on_event,
        should_stop=should_stop, **config,
    )
    if state["cancelled"] or ckpt is None or should_stop():
        emit({"type": "cancelled", "message": "retrain cancelled; the current model is kept"})
        return
    new_pred, pred_path, unc_path = predict(ckpt, "after")
    new_scores = score_slices(new_pred, reference, job.held_back) if reference is not None else {}
    accepted, reason = accept_retrain(old_scores or None, new_scores or None, job.tolerance)
    emit({
        "type": "done", "checkpoint": ckpt, "prediction": pred_path, "uncertainty": unc_path,
        "old_scores": old_scores, "new_scores": new_scores, "accepted": accepted,
        "reason": reason, "parent": job.parent, "method": job.method, "steps": job.steps,
    })


def discard_job(job: RetrainJob) -> None:
    """Delete a finished job's folder (once the session has copied what it keeps)."""
    import shutil

    shutil.rmtree(job.out_dir, ignore_errors=True)


def child_threads() -> int:
    """Torch threads for the child: every core but one, which stays with the UI."""
    return max(1, (os.cpu_count() or 2) - 1)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("out of memory", "outofmemory", "can't allocate memory",
                                   "cannot allocate memory", "not enough memory"))


def error_event(exc: BaseException) -> Event:
    """An ``error`` event the user can read, with the traceback kept for the log."""
    # light imports only: this also runs in children that never loaded torch
    from training.io import DataError
    from training.loop import NoLabelledSlicesError

    if is_out_of_memory(exc):
        kind = "oom"
        message = ("out of memory while retraining: use fewer steps, a smaller model or a "
                   f"smaller volume ({type(exc).__name__}: {str(exc)[:200]})")
    elif isinstance(exc, DataError | NoLabelledSlicesError):
        kind, message = "data", str(exc)
    else:
        kind, message = "exception", f"retrain failed: {type(exc).__name__}: {exc}"
    return {"type": "error", "kind": kind, "message": message,
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


def _child_main(target: Target, job: Any, events: Any, stop: Any, threads: int) -> None:
    """Entry point of the training process."""
    try:
        os.nice(5)  # the UI process wins any contention for the CPU
    except (AttributeError, OSError):
        pass
    # torch reads these when it is first imported (by the target); set them explicitly too
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    code = 0
    try:
        events.put({"type": "started", "pid": os.getpid()})
        target(job, events.put, stop.is_set)
    except BaseException as exc:  # noqa: B036 - the parent must hear about every failure
        events.put(error_event(exc))
        code = 1
    finally:
        events.close()
        events.join_thread()  # flush every event before the process ends
    sys.exit(code)


# ----- the UI side --------------------------------------------------------------------------------


class TrainingBridge:
    """Start, watch and cancel one background retrain at a time.

    ``poll()`` never blocks: call it from a ``QTimer`` or napari ``thread_worker``. It returns the
    events that arrived, and turns a child that died without a result into an ``error`` event.
    """

    def __init__(self, target: Target = run_retrain, threads: int | None = None,
                 cancel_grace_s: float = 30.0) -> None:
        self.target = target
        self.threads = threads or child_threads()
        self.cancel_grace_s = cancel_grace_s
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._events: Any = None
        self._stop: Any = None
        self._finished = True
        self._cancel_at: float | None = None
        self.last_event: Event | None = None
        self._exiting: list[tuple[Any, float]] = []

    @property
    def running(self) -> bool:
        """True from :meth:`start` until a terminal event has been returned by :meth:`poll`."""
        return not self._finished

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, job: Any) -> None:
        """Start the child on ``job``; refuses while another run is going."""
        if self.running:
            raise RuntimeError("a retrain is already running; cancel it or wait for it")
        self._events = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._proc = self._ctx.Process(
            target=_child_main, args=(self.target, job, self._events, self._stop, self.threads),
            name="napari-semiseg-retrain", daemon=True,
        )
        self._finished = False
        self._cancel_at = None
        self._proc.start()

    def cancel(self) -> None:
        """Ask the child to stop at its next step; it is killed if it ignores that for long."""
        if self.running and self._stop is not None:
            self._stop.set()
            self._cancel_at = time.monotonic()

    def kill(self) -> None:
        """Stop the child at once (SIGKILL); :meth:`poll` then reports the run as cancelled."""
        if self._proc is not None and self._proc.is_alive():
            self._cancel_at = self._cancel_at or time.monotonic()
            self._proc.kill()

    def _drain(self) -> list[Event]:
        out: list[Event] = []
        if self._events is None:
            return out
        while True:
            try:
                ev = self._events.get_nowait()
            except queue_mod.Empty:
                return out
            except (EOFError, OSError, ValueError):  # the pipe broke with the child
                return out
            out.append(ev)

    def poll(self) -> list[Event]:
        """Events since the last call; never blocks."""
        self._reap()
        if self._finished:
            return []
        events = self._drain()
        terminal = next((e for e in events if e.get("type") in TERMINAL), None)
        if terminal is None and self._proc is not None:
            if self._cancel_at is not None and self._proc.is_alive() \
                    and time.monotonic() - self._cancel_at > self.cancel_grace_s:
                self._proc.kill()  # it ignored the request; the user asked to stop
            if not self._proc.is_alive():
                self._proc.join(timeout=1)
                events += self._drain()  # what it sent just before exiting
                terminal = next((e for e in events if e.get("type") in TERMINAL), None)
                if terminal is None:
                    terminal = self._death_event(self._proc.exitcode)
                    events.append(terminal)
        if terminal is not None:
            # nothing after the terminal event counts
            events = events[: events.index(terminal) + 1]
            self._finish()
        if events:
            self.last_event = events[-1]
        return events

    def _death_event(self, code: int | None) -> Event:
        if self._cancel_at is not None:
            return {"type": "cancelled", "message": "retrain stopped; the current model is kept"}
        if code is not None and code < 0:
            sig = -code
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            hint = (" - most likely the system ran out of memory and killed it"
                    if sig == signal.SIGKILL else "")
            return {"type": "error", "kind": "oom" if sig == signal.SIGKILL else "crash",
                    "message": f"the training process was killed ({name}){hint}; "
                               f"the current model is kept", "exitcode": code}
        return {"type": "error", "kind": "crash", "exitcode": code,
                "message": f"the training process ended without a result (exit code {code}); "
                           f"the current model is kept"}

    def _finish(self) -> None:
        """Mark the run over without waiting for the child to exit: poll() runs on the UI
        thread, and a child still tearing torch down can take seconds (measured: 5 s)."""
        self._finished = True
        if self._proc is not None:
            self._exiting.append((self._proc, time.monotonic()))
        self._reap()
        if self._events is not None:
            self._events.close()
            self._events.cancel_join_thread()

    def _reap(self, grace_s: float = 20.0) -> None:
        """Collect finished children; kill one that lingers past ``grace_s`` after its result."""
        still = []
        for proc, since in self._exiting:
            if proc.is_alive() and time.monotonic() - since > grace_s:
                proc.kill()
            if proc.is_alive():
                still.append((proc, since))
            else:
                proc.join(timeout=0)
        self._exiting = still

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> list[Event]:
        """Poll until the run ends (headless use and tests); returns every event."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events: list[Event] = []
        while self.running:
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"retrain still running after {timeout} s")
            if self.running:
                time.sleep(interval)
        return events

    def close(self) -> None:
        """Stop any run (used when the widget closes)."""
        if self.running:
            self.cancel()
            self.kill()
            if self._proc is not None:
                self._proc.join(timeout=5)
            self.poll()
        for proc, _ in self._exiting:  # closing may wait a little; the window is going away
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._exiting = []

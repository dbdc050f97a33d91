"""Run a retrain in a separate process and stream its events back, without ever blocking the UI.

Training in a thread of the napari process would share the GIL with Qt and freeze the window
(micro-sam #740, napari #1495). Here the fine-tune runs in a fresh interpreter,
``python -m napari_semiseg._training_child``, at a lower priority and with one core left to the UI.
It is not multiprocessing's ``spawn``: that re-imports the user's ``__main__`` in the child, so a
napari script without an ``if __name__ == "__main__":`` guard would run again there. The child
gets the target by name (``"module:qualname"``), the job, the thread count and this process's
``sys.path`` on its stdin, and sends plain-dict events back on its stdout, which a reader thread
queues; the widget calls :meth:`TrainingBridge.poll` from a timer.

Events (all plain dicts with a ``"type"``):

- ``started`` (pid), ``progress`` (step, total, losses, elapsed, eta), ``checkpoint`` (path,
  step): as the engine emits them;
- ``prediction`` (path, uncertainty, step): a mid-training prediction saved as ``.npy``;
- ``done``: the result, see :func:`run_retrain`; terminal;
- ``cancelled`` (message); terminal;
- ``error`` (message, kind = ``oom`` | ``killed`` | ``crash`` | ``exception`` | ``data``);
  terminal. ``oom`` only with evidence (an exception saying so, or the kernel's out-of-memory
  killer); a SIGKILL without it is ``killed``.

A cancelled or failed run produces no model version: the session's current version is untouched.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._training_child import read_frame, resolve, write_frame

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
    first_preview_s: float = 0.0  # seconds of training before one early preview; 0 = none
    tolerance: float = 0.0  # Dice a retrain may lose on held-back slices and still be adopted
    # the network's share when its prediction is blended with the interpolation between the
    # painted slices (a shape prior); None = the network alone
    fuse_weight: float | None = None
    # the user says the structure lies between their first and last painted slices (along z):
    # nothing is predicted beyond them; None = no such limit
    extent: list[int] | None = None
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
    first_preview_s: float = 0.0,
    device: str | None = None,
    fuse_weight: float | None = None,
    within_extent: bool = False,
    **config: Any,
) -> RetrainJob:
    """Snapshot a :class:`napari_semiseg.session.Session` into a job folder.

    Raises :class:`training.loop.NoLabelledSlicesError` when nothing is labelled and
    ``SessionError`` when the session has no model. The user can keep painting afterwards:
    the job trains on the labels as they were when Retrain was clicked. ``within_extent``:
    the structure lies between the first and last painted slices that show it (all painted
    slices, held-back ones included), and the Retrain predicts nothing beyond them.
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
        first_preview_s=float(first_preview_s), tolerance=session.settings.tolerance,
        fuse_weight=fuse_weight,
        extent=_painted_extent(session) if within_extent else None,
        config=dict(config),
    )


def _painted_extent(session: Any) -> list[int] | None:
    from training.loop import painted_extent

    extent = painted_extent(session.training_labels(), axis=0)
    return list(extent) if extent is not None else None


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
        res = predict_volume(model, meta, image, mc_samples=job.mc_samples, device=job.device,
                             probabilities=job.fuse_weight is not None)
        if job.fuse_weight is not None:  # the painted slices' interpolation as a shape prior
            from training.loop import shape_prior_prediction

            res["labels"] = shape_prior_prediction(res["probabilities"], labels,
                                                   job.fuse_weight)
        if job.extent is not None:  # nothing beyond the slices the user said the structure ends
            from training.loop import limit_to_extent

            res["labels"] = limit_to_extent(res["labels"], job.extent)
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
        wants_preview = job.preview_every or job.first_preview_s
        if kind == "checkpoint" and ev.get("path") and wants_preview:
            # building the network to load it draws from torch's generator: restored after, so
            # the training does not depend on when (after how many steps) a preview came
            with torch.random.fork_rng(devices=[]):
                _, p, u = predict(ev["path"], f"step{ev['step']}")
            emit({"type": "prediction", "path": p, "uncertainty": u, "step": ev["step"]})

    if job.fuse_weight is not None and (job.preview_every or job.first_preview_s):
        # the shape prior alone, on screen at once: what "fill between slices" gives, while
        # the network learns to do better
        from training.interpolation import interpolate_between_slices

        filled = out / "prediction-interpolation.npy"
        np.save(filled, interpolate_between_slices(labels))
        emit({"type": "prediction", "path": str(filled), "step": 0,
              "source": "interpolation"})

    config = dict(job.config)
    if job.preview_every and job.preview_every < job.steps:
        config.setdefault("checkpoint_every", job.preview_every)
    if job.first_preview_s:
        config.setdefault("first_checkpoint_s", job.first_preview_s)
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


# what the retrain target imports first: a spare process loads them ahead of the job
RETRAIN_PRELOAD = ("torch", "torch._dynamo", "training.loop", "training.inference",
                   "training.interpolation")


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


# ----- the UI side --------------------------------------------------------------------------------


def target_reference(target: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a target the training process can import by name.

    Raises ``ValueError`` for one it cannot: defined in ``__main__`` (a script, ``python -c``, a
    notebook), a lambda, a local function, or anything else its name does not lead back to.
    """
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    ref = f"{module}:{qualname}"
    ok = bool(module) and bool(qualname) and module != "__main__" and "<" not in str(qualname)
    if ok:
        try:
            ok = resolve(ref) is target
        except (ImportError, AttributeError, ValueError, TypeError):
            ok = False
    if not ok:
        raise ValueError(
            f"the training target {target!r} must be a function defined at the top level of an "
            "importable module (not in __main__, a script or a notebook, and not a lambda or a "
            "local function): the training process imports it by name")
    return ref


def _site_dirs() -> set[str]:
    dirs = list(getattr(site, "getsitepackages", list)())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return {str(Path(d).resolve()) for d in dirs}


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    # the child shows nothing: no display for a library to open, were one to try
    for key in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(key, None)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["MPLBACKEND"] = "Agg"
    # `-m` must find this copy of the package (a source checkout, say) before the parent's
    # sys.path arrives; a site-packages folder is on the path anyway and must not go first
    root = str(Path(__file__).resolve().parent.parent)
    if root not in _site_dirs():
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _counter(path: Path, name: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _oom_kills() -> tuple[int | None, ...]:
    """Linux's out-of-memory kill counters: system-wide and this process's cgroup (v2 or v1,
    which the child shares); ``None`` where unreadable (other systems, old kernels)."""
    paths = [Path("/proc/vmstat")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            if controllers == "":
                paths.append(Path("/sys/fs/cgroup", group.lstrip("/"), "memory.events"))
            elif "memory" in controllers.split(","):
                paths.append(Path("/sys/fs/cgroup/memory", group.lstrip("/"),
                                  "memory.oom_control"))
    except (OSError, ValueError):
        pass
    return tuple(_counter(p, "oom_kill") for p in paths)


def _kib_fields(path: str) -> dict[str, int]:
    """``Key: N kB`` lines of a /proc file, in bytes."""
    out: dict[str, int] = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _memory_sample(pid: int) -> tuple[int, int, int] | None:
    """(the child's resident bytes, bytes available, total bytes) on Linux; else ``None``."""
    rss = _kib_fields(f"/proc/{pid}/status").get("VmRSS")
    info = _kib_fields("/proc/meminfo")
    if rss is None or "MemAvailable" not in info or "MemTotal" not in info:
        return None
    return rss, info["MemAvailable"], info["MemTotal"]


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _read_events(stream: IO[bytes], out: queue_mod.Queue) -> None:
    """The reader thread: the child's events into ``out`` until its stdout closes."""
    try:
        while (event := read_frame(stream)) is not None:
            out.put(event)
    except Exception as exc:  # whatever broke the stream, the run is over
        # the bridge then closes the child's stdin, which stops it
        out.put({"type": "error", "kind": "crash",
                 "message": f"the training process sent an unreadable message ({exc}); "
                            "the current model is kept"})
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _close_pipes(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass


def _first_terminal(events: list[Event]) -> Event | None:
    return next((e for e in events if e.get("type") in TERMINAL), None)


class TrainingBridge:
    """Start, watch and cancel one background retrain at a time.

    ``poll()`` never blocks: call it from a ``QTimer`` or napari ``thread_worker``. It returns the
    events that arrived, and turns a child that died without a result into an ``error`` event.
    ``target`` must be importable by name (see :func:`target_reference`).
    """

    def __init__(self, target: Target = run_retrain, threads: int | None = None,
                 cancel_grace_s: float = 30.0, preload: Sequence[str] | None = None) -> None:
        self.target = target
        # what a spare process imports ahead of the job (see prepare)
        self.preload = tuple(RETRAIN_PRELOAD if preload is None and target is run_retrain
                             else preload or ())
        self._spare: subprocess.Popen | None = None
        self.threads = threads or child_threads()
        self.cancel_grace_s = cancel_grace_s
        self._proc: subprocess.Popen | None = None
        self._events: queue_mod.Queue = queue_mod.Queue()
        self._reader: threading.Thread | None = None
        self._finished = True
        self._cancel_at: float | None = None
        self._oom_before: tuple[int | None, ...] = ()
        self._memory: tuple[int, int, int] | None = None
        self._sampled_at = 0.0
        self.last_event: Event | None = None
        self._exiting: list[tuple[subprocess.Popen, float]] = []

    @property
    def running(self) -> bool:
        """True from :meth:`start` until a terminal event has been returned by :meth:`poll`."""
        return not self._finished

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, job: Any) -> None:
        """Start the child on ``job``; refuses while another run is going.

        Raises ``ValueError`` for a target the child cannot import by name, and ``OSError`` or
        ``RuntimeError`` when the process cannot be started; the bridge then stays idle.
        """
        if self.running:
            raise RuntimeError("a retrain is already running; cancel it or wait for it")
        if not sys.executable:
            raise RuntimeError("cannot start the training process: sys.executable is empty")
        init = {"target": target_reference(self.target),
                "job": pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL),
                "threads": self.threads, "sys_path": list(sys.path),
                "grace_s": self.cancel_grace_s}
        oom_before = _oom_kills()
        proc, self._spare = self._spare, None
        if proc is None or proc.poll() is not None:  # no spare, or it died waiting
            if proc is not None:
                _close_pipes(proc)
            proc = self._spawn()
        events: queue_mod.Queue = queue_mod.Queue()
        try:
            write_frame(proc.stdin, init)
            reader = threading.Thread(target=_read_events, args=(proc.stdout, events),
                                      name="napari-semiseg-retrain-events", daemon=True)
            reader.start()
        except BaseException as exc:
            proc.kill()
            proc.wait()
            _close_pipes(proc)
            if isinstance(exc, OSError):
                raise RuntimeError("the training process ended as it started "
                                   f"(exit code {proc.returncode})") from exc
            raise
        # the state changes only now: a start that failed above leaves the bridge idle
        self._proc, self._events, self._reader = proc, events, reader
        self._finished = False
        self._cancel_at = None
        self._oom_before, self._memory, self._sampled_at = oom_before, None, 0.0

    def prepare(self) -> None:
        """Start a spare training process now, so the next :meth:`start` finds torch and the
        engine imported (seconds sooner to the first preview on 2 cores). Call it when a
        Retrain becomes possible; it does nothing while a run or a spare exists."""
        if self.running or (self._spare is not None and self._spare.poll() is None):
            return
        try:
            self._spare = self._spawn()
        except (OSError, RuntimeError):  # start() will try again, and report what fails
            self._spare = None

    def _spawn(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "napari_semiseg._training_child"]
        if self.preload:
            cmd += ["--preload", ",".join(self.preload)]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=_child_env(self.threads))

    def cancel(self) -> None:
        """Ask the child to stop at its next step; it is killed if it ignores that for long."""
        if self.running and self._proc is not None:
            self._cancel_at = time.monotonic()
            try:
                self._proc.stdin.write(b"x")  # any byte: the child's stdin thread sets its flag
                self._proc.stdin.flush()
            except (OSError, ValueError):  # it has gone already; poll() says how
                pass

    def kill(self) -> None:
        """Stop the child at once (SIGKILL); :meth:`poll` then reports the run as cancelled."""
        if self._proc is not None and self._proc.poll() is None:
            self._cancel_at = self._cancel_at or time.monotonic()
            self._proc.kill()

    def _drain(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue_mod.Empty:
                return out

    def poll(self) -> list[Event]:
        """Events since the last call; never blocks (but for up to 1 s once the child died)."""
        self._reap()
        proc = self._proc
        if self._finished or proc is None:
            return []
        events = self._drain()
        terminal = _first_terminal(events)
        if terminal is None:
            self._sample_memory(proc.pid)
            if self._cancel_at is not None and proc.poll() is None \
                    and time.monotonic() - self._cancel_at > self.cancel_grace_s:
                proc.kill()  # it ignored the request; the user asked to stop
            if proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=1)  # what it sent just before exiting
                events += self._drain()
                terminal = _first_terminal(events)
                if terminal is None:
                    terminal = self._death_event(proc.returncode)
                    events.append(terminal)
        if terminal is not None:
            # nothing after the terminal event counts
            events = events[: events.index(terminal) + 1]
            self._finish()
        if events:
            self.last_event = events[-1]
        return events

    def _sample_memory(self, pid: int) -> None:
        """Once a second: what the child and the system use, to explain a SIGKILL later."""
        now = time.monotonic()
        if now - self._sampled_at >= 1.0:
            self._sampled_at = now
            self._memory = _memory_sample(pid) or self._memory

    def _oom_evidence(self) -> str | None:
        after = _oom_kills()
        if any(a is not None and b is not None and a > b
               for a, b in zip(after, self._oom_before, strict=False)):
            return "the kernel's out-of-memory killer ran"
        if self._memory is not None:
            rss, available, total = self._memory
            if available <= 0.05 * total:
                return (f"only {_gib(available)} of {_gib(total)} was free; "
                        f"it used {_gib(rss)}")
        return None

    def _death_event(self, code: int | None) -> Event:
        kept = "; the current model is kept"
        if self._cancel_at is not None:
            return {"type": "cancelled", "message": "retrain stopped; the current model is kept"}
        if code is not None and code < 0:
            sig = -code
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            if sig != getattr(signal, "SIGKILL", None):
                return {"type": "error", "kind": "crash", "exitcode": code,
                        "message": f"the training process was killed ({name}){kept}"}
            evidence = self._oom_evidence()
            if evidence is not None:
                return {"type": "error", "kind": "oom", "exitcode": code,
                        "message": f"the system ran out of memory and killed the training "
                                   f"process ({evidence}){kept}; use fewer steps, a smaller "
                                   f"model or a smaller volume"}
            # a userspace killer (systemd-oomd, earlyoom, macOS) leaves no trace we can read
            used = "" if self._memory is None else f"; it last used {_gib(self._memory[0])}"
            return {"type": "error", "kind": "killed", "exitcode": code,
                    "message": f"the training process was killed (SIGKILL) by another process "
                               f"or by the system, e.g. when memory ran out{used}{kept}"}
        return {"type": "error", "kind": "crash", "exitcode": code,
                "message": f"the training process ended without a result (exit code {code})"
                           f"{kept}"}

    def _finish(self) -> None:
        """Mark the run over without waiting for the child to exit: poll() runs on the UI
        thread, and a child still tearing torch down can take seconds (measured: 5 s)."""
        self._finished = True
        if self._proc is not None:
            self._exiting.append((self._proc, time.monotonic()))
            try:  # end of file: a child that lingers (or never sent its result) stops itself
                self._proc.stdin.close()
            except OSError:
                pass
        self._reap()

    def _reap(self, grace_s: float = 20.0) -> None:
        """Collect finished children; kill one that lingers past ``grace_s`` after its result."""
        still = []
        for proc, since in self._exiting:
            if proc.poll() is None and time.monotonic() - since > grace_s:
                proc.kill()
            if proc.poll() is None:
                still.append((proc, since))
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
        """Stop any run and any spare (used when the widget closes)."""
        spare, self._spare = self._spare, None
        if spare is not None:  # end of file on its stdin: it exits before reading a job
            _close_pipes(spare)
            self._exiting.append((spare, time.monotonic()))
        if self.running and self._proc is not None:
            self.cancel()
            self.kill()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.poll()
        for proc, _ in self._exiting:  # closing may wait a little; the window is going away
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._exiting = []

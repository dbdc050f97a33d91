"""Run a training job in a separate process and stream its events back, never blocking the UI.

Training in a thread of the napari process would share the GIL with Qt and freeze the window
(micro-sam #740, napari #1495). Here the fine-tune runs in a fresh interpreter,
``python -m napari_semiseg._training_child``, at a lower priority and with one core left to the UI.
It is not multiprocessing's ``spawn``: that re-imports the user's ``__main__`` in the child, so a
napari script without an ``if __name__ == "__main__":`` guard would run again there. The child
gets the target by name (``"module:qualname"``), the job, the thread count and this process's
``sys.path`` on its stdin, and sends plain-dict events back on its stdout, which a reader thread
queues; the widget calls :meth:`TrainingBridge.poll` from a timer.

Events (all plain dicts with a ``"type"``; the targets, :mod:`napari_semiseg.retrain_job` and
:mod:`napari_semiseg.weak_job`, say what else they send):

- ``started`` (pid), ``progress`` (step, total, losses, elapsed, eta), ``checkpoint`` (path,
  step): as the engine emits them;
- ``done``: the result; terminal;
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
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .framing import TERMINAL, Event, read_frame, resolve, write_frame

Target = Callable[[Any, Callable[[Event], None], Callable[[], bool]], None]


def child_threads() -> int:
    """Torch threads for the child: every core but one, which stays with the UI."""
    return max(1, (os.cpu_count() or 2) - 1)


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

    def __init__(self, target: Target, threads: int | None = None,
                 cancel_grace_s: float = 30.0, preload: Sequence[str] = ()) -> None:
        self.target = target
        self.preload = tuple(preload)  # what a spare process imports ahead of the job
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

    def start(self, job: Any, target: Target | None = None) -> None:
        """Start the child on ``job``, with ``target`` (default: the bridge's); refuses while
        another run is going. Another target shares the spare process and the one-run rule
        (the dock's training between scans runs where its Retrains do).

        Raises ``ValueError`` for a target the child cannot import by name, and ``OSError`` or
        ``RuntimeError`` when the process cannot be started; the bridge then stays idle.
        """
        if self.running:
            raise RuntimeError("a retrain is already running; cancel it or wait for it")
        if not sys.executable:
            raise RuntimeError("cannot start the training process: sys.executable is empty")
        init = {"target": target_reference(target or self.target),
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

    def close(self, grace_s: float = 1.0) -> None:
        """Stop any run and any spare (used when the widget closes).

        A spare, and a child that has sent its result, hold no work: each gets ``grace_s`` to
        exit by itself and is then killed, so closing the dock does not wait for torch to
        finish importing or unloading (seconds each)."""
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
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._exiting = []

"""The training process's entry point: ``python -m napari_semiseg._training_child``.

:class:`~napari_semiseg.training_bridge.TrainingBridge` starts this module rather than using
multiprocessing's ``spawn``, which re-imports the user's ``__main__`` in the child: a napari script
without an ``if __name__ == "__main__":`` guard would run again there and open a second window.
Here the child imports only the target, by name.

The wire format, both ways, is frames of :mod:`napari_semiseg.framing`.

- stdin: one frame ``{"target": "module:qualname", "job": <pickled job>, "threads": int,
  "sys_path": [...], "grace_s": float}``; after it, any byte asks the run to stop, and end of file
  (the napari process closed the bridge or died) stops it too, with a hard exit after ``grace_s``
  if the target ignores the request.
- stdout: the events, one frame each. Only :func:`main` writes there: fd 1 is pointed at stderr
  first, so prints from libraries cannot corrupt the stream.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import signal
import sys
import threading
import time
from typing import BinaryIO

from napari_semiseg.framing import error_event, frame, read_frame, resolve


class _Events:
    """The event stream: thread-safe, and silent once the napari process has gone."""

    def __init__(self, stream: BinaryIO, stop: threading.Event) -> None:
        self._stream = stream
        self._stop = stop
        self._lock = threading.Lock()
        self._broken = False

    def emit(self, event: dict, timeout: float = -1) -> None:
        data = frame(event)  # an unpicklable event is the target's error: raise it there
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            if not self._broken:
                self._stream.write(data)
                self._stream.flush()
        except (OSError, ValueError):  # nobody reads any more: stop working for nobody
            self._broken = True
            self._stop.set()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._broken = True
            try:
                self._stream.close()
            except OSError:
                pass


def _watch_stdin(stdin: BinaryIO, stop: threading.Event, events: _Events, grace_s: float) -> None:
    """Any byte on stdin is a cancel; end of file means the bridge is gone: stop, then exit."""
    while True:
        try:
            data = stdin.read(64)
        except (OSError, ValueError):
            data = b""
        if not data:
            break
        stop.set()
    stop.set()
    time.sleep(grace_s)  # the target had its chance to stop at a step boundary
    events.emit({"type": "cancelled", "message": "the napari process went away; training stopped"},
                timeout=1)
    os._exit(1)


def _preload(argv: list[str]) -> None:
    """``--preload a,b``: import these before the job comes. A spare process started ahead of
    Retrain (``TrainingBridge.prepare``) so spends its seconds of importing torch while the
    user still paints; one that fails to import here fails again, and is reported, in the job."""
    if len(argv) == 2 and argv[0] == "--preload":
        for name in filter(None, argv[1].split(",")):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the job's own import says what is wrong
                pass


def main() -> int:
    events_fd = os.dup(1)  # the event stream; from here on stray prints go to stderr
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr (e.g. started from pythonw on Windows)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    stream = os.fdopen(events_fd, "wb")
    try:  # Ctrl-C in the terminal is for napari; if napari exits, stdin tells us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (OSError, ValueError):
        pass
    try:
        os.nice(5)  # the UI process wins any contention for the CPU
    except (AttributeError, OSError):
        pass
    _preload(sys.argv[1:])
    # unbuffered: a thread blocked in sys.stdin's buffered reader holds its lock, and the
    # interpreter then dies with a fatal error at exit
    stdin = io.FileIO(0, "rb", closefd=False)
    init = read_frame(stdin)
    if init is None:  # the bridge went away before sending the job
        return 2
    parent_path = list(init["sys_path"])  # the parent's, whatever PYTHONPATH says
    sys.path[:] = parent_path + [p for p in sys.path if p not in parent_path]
    # torch reads these when it is first imported (by the target); a spare process imported it
    # already (--preload), so it is told here, once for every target
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(init["threads"])
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(init["threads"]))
    stop = threading.Event()
    events = _Events(stream, stop)
    threading.Thread(target=_watch_stdin, args=(stdin, stop, events, float(init["grace_s"])),
                     name="stdin-watch", daemon=True).start()
    code = 0
    try:
        events.emit({"type": "started", "pid": os.getpid()})
        target = resolve(init["target"])
        target(pickle.loads(init["job"]), events.emit, stop.is_set)
    except BaseException as exc:  # noqa: B036 - the parent must hear about every failure
        try:
            event = error_event(exc)
        except Exception:
            event = {"type": "error", "kind": "exception",
                     "message": f"retrain failed: {type(exc).__name__}: {exc}"}
        events.emit(event)
        code = 1
    events.close()
    return code


if __name__ == "__main__":
    sys.exit(main())

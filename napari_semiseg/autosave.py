"""Autosave off the UI thread: one writer thread that always writes the newest snapshot.

A verified write of a 100 x 256 x 256 label volume takes 30-60 ms (write, fsync, read back,
compare), up to 200 ms on a loaded machine; done after every brush stroke on the UI thread it
makes painting stutter. The session hands this writer *copies* of what changed; a newer copy of
the same part replaces one not yet written, so a fast painter never builds a queue. A failed
write keeps its parts and merges them under the next change's (retried then, as before).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundWriter:
    """Write ``parts`` (name -> data) with ``write`` on a daemon thread, newest first."""

    def __init__(self, write: Callable[[dict], None],
                 on_error: Callable[[BaseException], None],
                 on_success: Callable[[], None]) -> None:
        self._write, self._on_error, self._on_success = write, on_error, on_success
        self._cond = threading.Condition()
        self._pending: dict | None = None
        self._failed: dict | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="semiseg-autosave", daemon=True)
        self._thread.start()

    def submit(self, parts: dict) -> None:
        """Queue ``parts``; what is already queued and not written is superseded part by part."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the autosave writer is closed")
            base = {**(self._failed or {}), **(self._pending or {})}
            self._failed = None
            self._pending = {**base, **parts}
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued is written (or failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy,
                                       timeout)

    def drop_failed(self) -> None:
        """Forget parts of a failed write (the caller has just written everything itself)."""
        with self._cond:
            self._failed = None

    def stop(self) -> None:
        """Let the thread end once what is queued is written, without waiting for it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        self.flush(timeout)
        self.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:  # closed and nothing left
                    return
                parts, self._pending, self._busy = self._pending, None, True
            try:
                self._write(parts)
            except BaseException as exc:  # noqa: BLE001 (reported to the session, never lost)
                with self._cond:
                    self._failed = {**parts, **(self._failed or {})}
                self._on_error(exc)
            else:
                self._on_success()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

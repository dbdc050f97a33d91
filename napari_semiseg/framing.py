"""The wire between the dock and its training process, imported by both sides.

Frames of ``MAGIC``, a length and a pickle, both ways (:func:`write_frame`, :func:`read_frame`);
the child imports its target by name (:func:`resolve`); a failure travels as a plain ``error``
event (:func:`error_event`). Light imports only: the child loads this before torch.
"""

from __future__ import annotations

import importlib
import pickle
import struct
import traceback
from typing import Any, BinaryIO

Event = dict[str, Any]
TERMINAL = ("done", "cancelled", "error")  # the events that end a run

MAGIC = b"SSEG"
_HEADER = struct.Struct("<4sQ")


def frame(obj: Any) -> bytes:
    """``obj`` as one frame; pickling errors are raised here, before anything is written."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(MAGIC, len(data)) + data


def write_frame(stream: BinaryIO, obj: Any) -> None:
    stream.write(frame(obj))
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next object; ``None`` at the end of the stream, including a frame cut off by the
    writer's death. Raises ``ValueError`` on bytes that are not a frame."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    magic, size = _HEADER.unpack(header)
    if magic != MAGIC:
        raise ValueError(f"not a message frame: {header!r}")
    data = _read_exact(stream, size)
    return None if data is None else pickle.loads(data)


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def resolve(ref: str) -> Any:
    """The object named by ``"module:qualname"``."""
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("out of memory", "outofmemory", "can't allocate memory",
                                   "cannot allocate memory", "not enough memory"))


def error_event(exc: BaseException) -> Event:
    """An ``error`` event the user can read, with the traceback kept for the log."""
    # light imports only: this also runs in children that never loaded torch
    from training.core.io import DataError
    from training.interactive.loop import NoLabelledSlicesError

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

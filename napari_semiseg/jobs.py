"""The dock's one job slot: Predict, Retrain and Train from tags take turns. Qt-free.

A job holds the session it was started for, and its result goes to that session only. While a
job runs, whatever would change its session or its model waits: the dock disables it and says
why (:meth:`JobSlot.why_busy`). Two trainings never run at once, and a Predict never lands in
the middle of a Retrain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The dock's jobs, by the name the user clicked (Train from tags is :mod:`._tags`'s).
RETRAIN, PREDICT = "Retrain", "Predict"


class JobSlotBusy(RuntimeError):
    """A job was asked for while another one runs; the message says which."""


@dataclass(eq=False)
class Job:
    """A running job: what the user clicked, the session it works for, its job folder."""

    name: str  # "Predict", "Retrain", "Train from tags"
    session: Any  # napari_semiseg.session.Session
    files: Any = None  # a RetrainJob or WeakJob: its out_dir is deleted when the job ends


class JobSlot:
    """At most one :class:`Job` at a time; ``on_change()`` runs when it is taken or freed."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.job: Job | None = None
        self.on_change = on_change

    @property
    def busy(self) -> bool:
        return self.job is not None

    def running(self, name: str) -> bool:
        return self.job is not None and self.job.name == name

    def why_busy(self) -> str:
        """What runs, on which scan, and what to do; "" when free."""
        job = self.job
        if job is None:
            return ""
        path = getattr(job.session, "image_path", None)
        scan = Path(path).name if path else "this scan"
        return f"{job.name} is running on {scan}: wait for it to end, or cancel it."

    def start(self, name: str, session: Any, files: Any = None) -> Job:
        """Take the slot for a job on ``session``; raises :class:`JobSlotBusy` when taken."""
        if self.job is not None:
            raise JobSlotBusy(self.why_busy())
        self.job = Job(name, session, files)
        self._changed()
        return self.job

    def finish(self, job: Job) -> None:
        """Free the slot of ``job`` (its job folder goes: the session copied what it keeps)."""
        if job.files is not None:
            discard_job(job.files)
        if self.job is job:
            self.job = None
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def job_folder(session: Any, prefix: str, work_dir: str | os.PathLike | None = None) -> Path:
    """``work_dir``, or a new folder in the session folder's ``jobs`` (a temporary one for a
    session without a folder)."""
    if work_dir is None:
        base = session.folder / "jobs" if session.folder is not None else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        work_dir = tempfile.mkdtemp(prefix=prefix, dir=base)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def discard_job(job: Any) -> None:
    """Delete a finished job's folder (``job.out_dir``)."""
    shutil.rmtree(job.out_dir, ignore_errors=True)

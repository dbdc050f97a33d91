"""The dock's training between scans of a New model's series. Qt-free.

When the user leaves a scan they finished with a New model and opens the next, the carried
model trains :data:`~training.interactive.between_scans.TRAIN_BETWEEN_SCANS_STEPS` more steps
on every finished segmentation, in the training process, while they look at the next scan
(:func:`training.interactive.between_scans.train_between_scans`, what the effort benchmark
measured). The run shares the Retrain's bridge, so two trainings never run at once; a Retrain
asked for meanwhile waits for it (or for Cancel, which keeps the steps trained so far).

:class:`BetweenScans` holds the one run and what it was started from; :meth:`BetweenScans.poll`
returns a :class:`Landed` once it has ended, and :meth:`Landed.add_to` lists its model as a
version of the next scan's session, if that session still starts from the model the run
started from (nothing the user did there is replaced).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.interactive.between_scans import TRAIN_BETWEEN_SCANS_STEPS

from .framing import Event


@dataclass
class BetweenScansJob:
    """What the training process needs: the carried model, the finished scans as (image,
    segmentation) ``.npy`` paths, oldest first (the scan just left last), and where to write."""

    model_path: str
    finished: list[tuple[str, str]]
    out_dir: str
    steps: int = TRAIN_BETWEEN_SCANS_STEPS
    method: str = "supervised"
    seed: int = 0
    device: str | None = None


def run_between_scans(job: BetweenScansJob, emit: Callable[[Event], None],
                      should_stop: Callable[[], bool]) -> None:
    """The training process's target: ``progress`` events, then ``done`` (checkpoint,
    steps_done, stopped) or ``cancelled`` when stopped before any step."""

    from training.interactive.between_scans import train_between_scans

    pairs = [(np.load(i), np.load(s)) for i, s in job.finished]
    reached = {"step": job.steps}

    def forward(ev: Event) -> None:
        # the trainer's own end events are not the job's: its result is sent below
        if ev.get("type") == "progress":
            emit(ev)
        elif ev.get("type") == "cancelled":
            reached["step"] = int(ev.get("step") or 0)

    path = train_between_scans(job.model_path, pairs, Path(job.out_dir) / "model.pt",
                               job.steps, method=job.method, seed=job.seed, device=job.device,
                               on_event=forward, should_stop=should_stop)
    if path is None:
        emit({"type": "cancelled", "message": "stopped before its first step"})
        return
    emit({"type": "done", "checkpoint": path, "steps_done": reached["step"],
          "stopped": reached["step"] < job.steps})


@dataclass
class Landed:
    """How a run ended: its model (``None`` when it produced none, with ``error`` saying why),
    the steps it trained, and what it had started from."""

    checkpoint: str | None
    steps_done: int
    n_scans: int
    from_model: str
    method: str = "supervised"
    error: str | None = None
    discarded: bool = False  # the user chose another model meanwhile: not carried
    target: tuple[Any, str | None] | None = None  # (next scan's session, its version then)

    def add_to(self, session: Any) -> Any:
        """List the model as a version of ``session`` and make it current, if the run was
        started for that session and it still uses the version it had then; returns the
        version, or None."""
        if self.checkpoint is None or self.discarded or self.target is None:
            return None
        target, version = self.target
        if target is not session or session.current != version:
            return None
        # no method: the versions list shows the note, which says where it came from
        return session.add_version(self.checkpoint, parent=version, steps=self.steps_done,
                                   note=f"{self.steps_done} steps between scans on "
                                        f"{self.n_scans} finished scan(s)")


class BetweenScans:
    """At most one run of training between scans on ``bridge`` (the Retrain's)."""

    def __init__(self, bridge: Any, steps: int = TRAIN_BETWEEN_SCANS_STEPS,
                 work_dir: str | os.PathLike | None = None) -> None:
        self.bridge = bridge
        self.steps = int(steps)  # 0: no training between scans
        self.work_dir = work_dir
        self.job: BetweenScansJob | None = None
        self.target: tuple[Any, str | None] | None = None
        self.progress: Event | None = None  # the latest progress event
        self._discard = False

    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self, model_path: str, finished: Sequence[tuple[str, str]], method: str,
              session: Any = None) -> BetweenScansJob | None:
        """Start training ``model_path`` on ``finished``; ``session`` is the next scan's, whose
        current version it will follow. None when there is nothing to do (no steps, nothing
        finished). Raises what :meth:`TrainingBridge.start` raises, and RuntimeError while
        the bridge runs something else."""
        if self.steps <= 0 or not finished:
            return None
        if self.job is not None or self.bridge.running:
            raise RuntimeError("another training is running")
        out = tempfile.mkdtemp(prefix="between-scans-", dir=self.work_dir)
        job = BetweenScansJob(model_path=str(model_path), finished=list(finished),
                              out_dir=out, steps=self.steps, method=method,
                              seed=len(finished))
        self.bridge.start(job, target=run_between_scans)
        self.job, self.progress, self._discard = job, None, False
        self.target = None if session is None else (session, session.current)
        return job

    def stop(self, discard: bool = False) -> None:
        """Ask the run to stop at its next step; its model so far is kept unless ``discard``."""
        if self.job is not None:
            self._discard = self._discard or discard
            self.bridge.cancel()

    def poll(self) -> Landed | None:
        """Take the bridge's events; the :class:`Landed` once the run has ended, else None."""
        if self.job is None:
            return None
        for ev in self.bridge.poll():
            kind = ev.get("type")
            if kind == "progress":
                self.progress = ev
            elif kind in ("done", "cancelled", "error"):
                job, self.job = self.job, None
                return Landed(
                    checkpoint=ev.get("checkpoint") if kind == "done" else None,
                    steps_done=int(ev.get("steps_done") or 0), n_scans=len(job.finished),
                    from_model=job.model_path, method=job.method,
                    error=ev.get("message") if kind == "error" else None,
                    discarded=self._discard, target=self.target)
        return None

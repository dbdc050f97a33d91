"""The Retrain button's job: a snapshot of the session (dock side), run by the training process.

:func:`make_job` writes what the child needs into a job folder and returns a
:class:`RetrainJob` of paths and plain values; no scan file is read on the Qt thread (an
unlabelled-scans folder goes to the child as its path). :func:`run_retrain`, the child's target,
runs the engine's one Retrain (:func:`training.interactive.retrain.retrain_once`) and streams
events back
through :class:`~napari_semiseg.training_bridge.TrainingBridge`:

- ``progress``, ``checkpoint``: as the engine emits them;
- ``prediction`` (path, uncertainty, step[, source]): a mid-training prediction saved as ``.npy``;
- ``warning`` (message): unlabelled scans that could not be used;
- ``done``: ``checkpoint``, ``prediction``, ``uncertainty`` (``.npy`` paths) and the verdict:
  ``adopted``, ``reason``, ``old_score``, ``new_score``, ``old_scores`` / ``new_scores`` (Dice per
  held-back slice), with ``parent``, ``method``, ``steps``, and, when slices were held back,
  ``kept_prediction`` / ``kept_uncertainty``: the previous model shown with every painted
  slice, for a Retrain not adopted; or ``cancelled``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.interactive.retrain import ANCHOR_CONFIDENCE

from .framing import Event
from .jobs import job_folder

MAX_UNLABELLED = 8  # scans from the unlabelled folder per Retrain: more buys little, costs memory


@dataclass
class RetrainJob:
    """Everything the child needs, as file paths and plain values (cheap to send to a process).

    ``labels`` holds the user's voxels on the training slices only (255 elsewhere);
    ``reference`` holds them on the ``held_back`` slices, which judge the retrain.
    ``unlabelled`` are ``.npy`` copies of the other open scans; ``unlabelled_folder`` a folder
    of scan files the child reads (up to :data:`MAX_UNLABELLED`). ``finished`` are scans the
    user finished before (:mod:`napari_semiseg.finished_scans`), whole segmentations the
    Retrain learns from beside this scan's painted slices.
    """

    model_path: str
    image: str
    labels: str
    out_dir: str
    reference: str | None = None
    held_back: list[tuple[int, int]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    unlabelled_folder: str | None = None
    # scans the user finished earlier, as (image, segmentation) .npy paths: trained on too
    finished: list[tuple[str, str]] = field(default_factory=list)
    method: str = "mean_teacher"
    steps: int = 50
    parent: str | None = None
    seed: int = 0
    device: str | None = None
    mc_samples: int = 0
    preview_every: int = 0  # steps between mid-training predictions; 0 = none
    first_preview_s: float = 0.0  # seconds of training before one early preview; 0 = none
    tolerance: float = 0.0  # Dice a retrain may lose on held-back slices and still be adopted
    anchor: float | None = ANCHOR_CONFIDENCE  # see training.interactive.retrain.ANCHOR_CONFIDENCE
    # the network's share when its prediction is blended with the interpolation between the
    # painted slices (a shape prior); None = the network alone
    fuse_weight: float | None = None
    # the user says the structure lies between their first and last painted slices (along z):
    # nothing is predicted beyond them; None = no such limit
    extent: list[int] | None = None
    config: dict = field(default_factory=dict)  # extra training.interactive.loop.finetune arguments

    def to_dict(self) -> dict:
        return asdict(self)


def make_job(
    session: Any,
    work_dir: str | os.PathLike | None = None,
    unlabelled_volumes: Sequence[np.ndarray] = (),
    *,
    unlabelled_folder: str | os.PathLike | None = None,
    method: str | None = None,
    steps: int | None = None,
    preview_every: int | None = None,
    first_preview_s: float = 0.0,
    device: str | None = None,
    anchor: float | None = ANCHOR_CONFIDENCE,
    fuse_weight: float | None = None,
    within_extent: bool = False,
    finished: Sequence[tuple[str, str]] = (),
    **config: Any,
) -> RetrainJob:
    """Snapshot a :class:`napari_semiseg.session.Session` into a job folder.

    Raises :class:`training.interactive.loop.NoLabelledSlicesError` when nothing is labelled and
    ``SessionError`` when the session has no model. The user can keep painting afterwards:
    the job trains on the labels as they were when Retrain was clicked. ``within_extent``:
    the structure lies between the first and last painted slices that show it (all painted
    slices, held-back ones included), and the Retrain predicts nothing beyond them.
    """
    model_path = session.current_model_path
    if model_path is None:
        from napari_semiseg.session import SessionError

        raise SessionError("no model to retrain: run Predict with a model first")
    from training.engine.checkpoint import read_meta
    from training.engine.inference import model_channels

    channels = model_channels(read_meta(model_path))
    image = session.model_input(channels)  # refused before anything is written
    train_slices, held = session.held_back_split()
    out = job_folder(session, "retrain-", work_dir)
    np.save(out / "image.npy", image)
    np.save(out / "labels.npy", session.training_labels(train_slices))
    reference = None
    if held:
        reference = str(out / "reference.npy")
        np.save(reference, session.training_labels(held))
    unl = []
    for vol in unlabelled_volumes:  # only scans the model can read: same channels
        if np.ndim(vol) != image.ndim or (image.ndim == 4 and np.shape(vol)[-1] != channels):
            continue
        p = out / f"unlabelled{len(unl)}.npy"
        np.save(p, np.asarray(vol))
        unl.append(str(p))
    # a finished scan the model cannot read (another number of channels) is left out
    finished = [(str(i), str(g)) for i, g in finished if _same_kind(i, image)]
    steps = int(steps if steps is not None else session.settings.steps)
    return RetrainJob(
        model_path=str(model_path), image=str(out / "image.npy"),
        labels=str(out / "labels.npy"), out_dir=str(out), reference=reference,
        held_back=[tuple(s) for s in held], unlabelled=unl, finished=finished,
        unlabelled_folder=str(unlabelled_folder) if unlabelled_folder else None,
        method=method or session.settings.method, steps=steps, parent=session.current,
        seed=session.settings.seed, device=device, mc_samples=session.settings.mc_samples,
        preview_every=(max(1, steps // 2) if preview_every is None else int(preview_every)),
        first_preview_s=float(first_preview_s), tolerance=session.settings.tolerance,
        anchor=anchor, fuse_weight=fuse_weight,
        extent=_painted_extent(session) if within_extent else None,
        config=dict(config),
    )


def _same_kind(path: str, image: np.ndarray) -> bool:
    """Whether the scan saved at ``path`` has ``image``'s axes and channels."""
    saved = np.load(path, mmap_mode="r")
    return saved.ndim == image.ndim and saved.shape[3:] == image.shape[3:]


def _painted_extent(session: Any) -> list[int] | None:
    from training.interactive.loop import retrain_extent

    extent = retrain_extent(session.training_labels(), axis=0)
    return list(extent) if extent is not None else None


def scan_files(folder: str | os.PathLike) -> list[Path]:
    """The scan files in ``folder`` (one level), sorted by name."""
    from training.core.io import VOLUME_SUFFIXES, has_suffix

    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and has_suffix(p, VOLUME_SUFFIXES))


# ----- the child side -----------------------------------------------------------------------------


def unlabelled_scans(job: RetrainJob, ndim: int) -> tuple[list[np.ndarray], list[str]]:
    """The unlabelled volumes of ``job`` with ``ndim`` axes, and why any scan was skipped."""
    from training.core.io import DataError, read_image

    scans = [np.load(p) for p in job.unlabelled]
    skipped: list[str] = []
    folder = job.unlabelled_folder
    files = scan_files(folder)[:MAX_UNLABELLED] if folder and Path(folder).is_dir() else []
    if folder and not Path(folder).is_dir():
        skipped.append(f"the unlabelled-scans folder {folder} is gone")
    channels = 1 if ndim == 3 else int(np.load(job.image, mmap_mode="r").shape[-1])
    for f in files:
        try:
            arr, _ = read_image(f, channels=channels)
        except DataError as e:
            skipped.append(str(e))
            continue
        if arr.ndim == ndim:
            scans.append(arr)
    return scans, skipped


def run_retrain(job: RetrainJob, emit: Callable[[Event], None],
                should_stop: Callable[[], bool]) -> None:
    """The child's target: one Retrain (:func:`training.interactive.retrain.retrain_once`), its
    previews
    and its result saved in the job folder, and the events described above."""

    from training.interactive.retrain import Shown, retrain_once

    out = Path(job.out_dir)
    image = np.load(job.image)
    unlabelled, skipped = unlabelled_scans(job, image.ndim)
    if skipped:
        emit({"type": "warning",
              "message": f"{len(skipped)} unlabelled scan(s) skipped: {skipped[0]}"})

    def preview(labels: np.ndarray, uncertainty: np.ndarray | None, step: int,
                source: str) -> None:
        path = out / f"prediction-{source}-{step}.npy"
        np.save(path, labels)
        ev: Event = {"type": "prediction", "path": str(path), "step": step, "source": source}
        if uncertainty is not None:
            ev["uncertainty"] = str(out / f"uncertainty-{source}-{step}.npy")
            np.save(ev["uncertainty"], uncertainty)
        emit(ev)

    finished = [(np.load(i), np.load(g)) for i, g in job.finished]
    wants_preview = bool(job.preview_every or job.first_preview_s)
    result = retrain_once(
        job.model_path, image, np.load(job.labels), out / "model.pt",
        reference=np.load(job.reference) if job.reference else None, held_back=job.held_back,
        unlabelled=unlabelled, method=job.method, steps=job.steps, seed=job.seed,
        shown=Shown(fuse_weight=job.fuse_weight, extent=job.extent, mc_samples=job.mc_samples,
                    device=job.device),
        anchor=job.anchor, tolerance=job.tolerance, on_event=emit, should_stop=should_stop,
        on_preview=preview if wants_preview else None, preview_every=job.preview_every,
        first_preview_s=job.first_preview_s, other_labelled=finished, **job.config)
    if result is None:
        emit({"type": "cancelled", "message": "retrain cancelled; the current model is kept"})
        return
    pred_path, unc_path = out / "prediction.npy", out / "uncertainty.npy"
    np.save(pred_path, result.prediction)
    np.save(unc_path, result.uncertainty)
    kept: dict = {}
    if result.kept_prediction is not None:  # shown if the Retrain is not adopted
        kept = {"kept_prediction": str(out / "kept_prediction.npy"),
                "kept_uncertainty": str(out / "kept_uncertainty.npy")}
        np.save(kept["kept_prediction"], result.kept_prediction)
        np.save(kept["kept_uncertainty"], result.kept_uncertainty)
    v = result.verdict
    emit({
        "type": "done", "checkpoint": result.checkpoint, "prediction": str(pred_path),
        "uncertainty": str(unc_path), **kept, "adopted": v.adopted, "reason": v.reason,
        "old_score": v.old_score, "new_score": v.new_score, "old_scores": v.old_scores,
        "new_scores": v.new_scores, "parent": job.parent, "method": job.method,
        "steps": job.steps, "extent": job.extent,
    })


# what the retrain target imports first: a spare process loads them ahead of the job
RETRAIN_PRELOAD = ("torch", "torch._dynamo", "training.interactive.loop",
                   "training.interactive.retrain", "training.engine.inference",
                   "training.interactive.interpolation", "training.engine.metrics")

"""Train from slice tags in the background process (the "Train from tags" button).

Same contract as :func:`napari_semiseg.retrain_job.run_retrain`: a job of file paths and plain
values goes to a child process started by :class:`~napari_semiseg.training_bridge.TrainingBridge`,
which streams plain-dict events back and ends with one ``done`` event:

``checkpoint`` (the cam_weak network), ``classifier``, and ``.npy`` paths ``cam`` (float32),
``weak`` (uint8, 255 on untagged slices), ``prediction`` and ``uncertainty``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .framing import Event
from .jobs import job_folder


@dataclass
class WeakJob:
    """Everything the child needs: the scan, the tags, the user's labels, the budget."""

    image: str
    tags: list[int]
    labels: str
    out_dir: str
    steps: int = 60
    classifier_steps: int = 60
    size: list[int] = field(default_factory=lambda: [128, 128])
    base: int = 16
    depth: int = 4
    seed: int = 0
    device: str | None = None
    config: dict = field(default_factory=dict)  # extra training.fit.trainer.TrainConfig fields

    def to_dict(self) -> dict:
        return asdict(self)


def make_weak_job(
    session: Any,
    work_dir: str | os.PathLike | None = None,
    *,
    steps: int = 60,
    classifier_steps: int | None = None,
    size: tuple[int, int] | None = None,
    base: int = 16,
    depth: int = 4,
    device: str | None = None,
    **config: Any,
) -> WeakJob:
    """Snapshot a session's scan, tags and labelled slices into a job folder.

    Raises ``SessionError`` unless at least one slice is tagged each way.
    """
    from napari_semiseg.session import SessionError

    tags = session.tag_array()
    if not (tags == 1).any() or not (tags == 0).any():
        raise SessionError("tag at least one slice 'contains structure' and one 'no structure'")
    out = job_folder(session, "tags-", work_dir)
    np.save(out / "image.npy", session.image)
    labels = session.training_labels(session.labelled_slices()) if session.n_labelled else \
        np.full(session.image.shape, 255, np.uint8)
    np.save(out / "labels.npy", labels)
    if size is None:  # the network's in-plane size: at most 128 px (CPU budget)
        size = tuple(min(128, int(s)) for s in session.image.shape[1:])
    return WeakJob(
        image=str(out / "image.npy"), tags=[int(t) for t in tags], labels=str(out / "labels.npy"),
        out_dir=str(out), steps=int(steps),
        classifier_steps=int(classifier_steps if classifier_steps is not None else steps),
        size=list(size), base=base, depth=depth, seed=session.settings.seed, device=device,
        config=dict(config),
    )


def run_weak(job: WeakJob, emit: Callable[[Event], None],
             should_stop: Callable[[], bool]) -> None:
    """Child side: localisation map -> weak masks -> cam_weak, then predict the scan."""

    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.fit.trainer import TrainConfig
    from training.weak.from_tags import train_from_tags

    out = Path(job.out_dir)
    image = np.load(job.image)
    labels = np.load(job.labels)
    cfg = TrainConfig(
        method="cam_weak", steps=job.steps, size=list(job.size), base=job.base, depth=job.depth,
        seed=job.seed, device=job.device or "auto", checkpoint=str(out / "model.pt"),
        labeled_bs=int(job.config.get("labeled_bs", 4)),
        unlabeled_bs=int(job.config.get("unlabeled_bs", 4)),
        log_every=int(job.config.get("log_every", 5)),
    )

    def on_event(ev: Event) -> None:
        if ev.get("type") in ("done", "cancelled"):  # ours comes after the prediction
            return
        emit(ev)

    res = train_from_tags([image], [np.asarray(job.tags, np.int8)], cfg, user_labels=[labels],
                          classifier_steps=job.classifier_steps, on_event=on_event,
                          should_stop=should_stop)
    if res.checkpoint is None or should_stop():
        emit({"type": "cancelled", "message": "training from tags cancelled; nothing changed"})
        return
    model, meta = load_checkpoint(res.checkpoint, device=job.device)
    pred = predict_volume(model, meta, image, device=job.device)
    paths = {}
    for name, arr in (("cam", res.cams[0]), ("weak", res.weak[0]),
                      ("prediction", pred["labels"]), ("uncertainty", pred["uncertainty"])):
        paths[name] = str(out / f"{name}.npy")
        np.save(paths[name], arr)
    from training.weak.localise import DEFAULT_LOCALISER

    emit({"type": "done", "checkpoint": res.checkpoint, "classifier": res.classifier,
          "localiser": DEFAULT_LOCALISER,
          "steps": job.steps, **paths})

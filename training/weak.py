"""Train from slice tags end to end: tag classifier -> CAMs -> weak masks -> ``cam_weak``.

One engine entry point, :func:`train_from_tags`, shared by ``semiseg train --tags``, the
``semiseg benchmark weak`` command and the assistant's "Train from tags" (through a background
process). Inputs are raw-intensity (z, y, x) volumes; RGB scans must already be grey
(:func:`training.io.rgb_to_grey`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from training import IGNORE_INDEX
from training.cam import train_classifier, volume_cam
from training.checkpoint import save_checkpoint
from training.data import DataError, TrainData
from training.device import pick_device
from training.normalization import DEFAULT_NORMALIZATION, normalize_intensity
from training.trainer import TrainConfig, train
from training.weak_masks import combine_labels, encode_weak, weak_masks

Event = dict


@dataclass
class WeakResult:
    """What :func:`train_from_tags` made (arrays per input volume)."""

    checkpoint: str | None  # the cam_weak segmentation network (None if cancelled)
    classifier: str | None  # the tag classifier (CAMs), saved next to it
    cams: list[np.ndarray]  # float32 (z, y, x) in [0, 1]
    weak: list[np.ndarray]  # uint8 (z, y, x): 0/1 on tagged slices, 255 elsewhere


def classifier_path(checkpoint: str | Path) -> Path:
    """Where the tag classifier of a cam_weak checkpoint is saved."""
    p = Path(checkpoint)
    return p.with_name(p.name.removesuffix(".pt") + ".classifier.pt")


def train_from_tags(
    images: Sequence[np.ndarray],
    tags: Sequence[np.ndarray],
    config: TrainConfig,
    user_labels: Sequence[np.ndarray] | None = None,
    unlabeled: Sequence[np.ndarray] = (),
    classifier_steps: int | None = None,
    refine: bool = True,
    normalization: dict | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_checkpoint: str | None = None,
    classifier: nn.Module | None = None,
) -> WeakResult:
    """Tag classifier, CAMs, weak masks, then ``config.method`` (normally ``cam_weak``).

    ``tags[i]`` holds one 1/0/-1 per slice of ``images[i]``. ``user_labels`` (255 = not
    annotated) are dense or sparse labels the user also has: they win over weak masks.
    ``classifier_steps`` defaults to half of ``config.steps``; a trained ``classifier`` (a U-Net
    with a cls head) is reused instead of training one. Progress events carry
    ``phase`` = ``classifier`` | ``segmentation`` and a ``step``/``total`` over both phases.
    """
    emit = on_event or (lambda e: None)
    if len(images) != len(tags):
        raise DataError("need one tag array per image volume")
    norm = dict(normalization or DEFAULT_NORMALIZATION)
    vols = [np.asarray(im)[None] if np.asarray(im).ndim == 2 else np.asarray(im) for im in images]
    x = [normalize_intensity(v, norm) for v in vols]
    n_cls = int(classifier_steps if classifier_steps is not None else max(config.steps // 2, 1))
    grand_total = n_cls + config.steps

    def cls_event(e: Event) -> None:
        emit({**e, "total": grand_total})

    clf = classifier
    if clf is None:
        clf = train_classifier(x, tags, size=config.size, steps=n_cls, lr=3e-3, base=config.base,
                               depth=config.depth, seed=config.seed,
                               device=pick_device(config.device), on_event=cls_event,
                               should_stop=should_stop)
    if clf is None:
        emit({"type": "cancelled", "phase": "classifier"})
        return WeakResult(None, None, [], [])
    cls_path = classifier_path(config.checkpoint)
    save_checkpoint(cls_path, clf, {
        "num_classes": 2, "class_names": ["background", "structure"], "normalization": norm,
        "dims": 2, "method": "tag_classifier", "size": list(config.size), "downsample": 1.0,
        "seed": config.seed, "total_steps": n_cls,
    })
    cams, weak, labels = [], [], []
    for i, (v, tg) in enumerate(zip(x, tags, strict=True)):
        cam, _ = volume_cam(clf, v, config.size, normalised=True)
        w = weak_masks(v, cam, np.asarray(tg), refine=refine)
        cams.append(cam)
        weak.append(w)
        enc = encode_weak(w, tg)
        if user_labels is not None and user_labels[i] is not None:
            enc = combine_labels(user_labels[i], enc)
        labels.append(enc)
    emit({"type": "weak_masks", "n_positive": int(sum((np.asarray(t) == 1).sum() for t in tags))})
    if not any((lab != IGNORE_INDEX).any() for lab in labels):
        raise DataError("no weak mask and no label: tag some slices first")
    data = TrainData(
        images=x, labels=labels,
        unlabeled=[normalize_intensity(np.asarray(u), norm) for u in unlabeled],
        num_classes=2, class_names=["background", "structure"], normalization=norm,
        names=[f"volume{i}" for i in range(len(x))],
    )

    def seg_event(e: Event) -> None:
        if e.get("type") == "progress":
            e = {**e, "phase": "segmentation", "step": n_cls + e["step"], "total": grand_total}
        emit(e)

    cfg = replace(config, num_classes=2)
    path = train(cfg, data, on_event=seg_event, should_stop=should_stop,
                 init_checkpoint=init_checkpoint)
    return WeakResult(path, str(cls_path), cams, weak)

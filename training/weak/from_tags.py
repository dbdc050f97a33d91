"""Train from slice tags end to end: localisation maps -> weak masks -> ``cam_weak``.

The maps come from :mod:`training.weak.localise`: by default the intensity anomaly against the
scan's slices tagged "absent" (no classifier); ``localiser="cam"`` trains a tag classifier and
uses its CAMs, ``"cam*anomaly"`` both.

One engine entry point, :func:`train_from_tags`, shared by ``semiseg train --tags``, the
``semiseg benchmark weak`` command and the assistant's "Train from tags" (through a background
process). Inputs are raw-intensity (z, y, x) volumes; RGB scans must already be grey
(:func:`training.core.io.rgb_to_grey`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from training import IGNORE_INDEX
from training.core.device import pick_device
from training.engine.checkpoint import save_checkpoint
from training.engine.data import DataError, TrainData
from training.engine.normalization import DEFAULT_NORMALIZATION, normalize_intensity
from training.fit.trainer import TrainConfig, train
from training.weak.cam import train_classifier, volume_cam
from training.weak.localise import (
    DEFAULT_LOCALISER,
    LOCALISERS,
    WEAK_MASK_RECIPE,
    anomaly_map,
    combine,
)
from training.weak.weak_masks import combine_labels, encode_weak, weak_masks

Event = dict


@dataclass
class WeakResult:
    """What :func:`train_from_tags` made (arrays per input volume)."""

    checkpoint: str | None  # the cam_weak segmentation network (None if cancelled)
    classifier: str | None  # the tag classifier (CAMs), saved next to it; None if not needed
    cams: list[np.ndarray]  # float32 (z, y, x) in [0, 1]: the localisation maps
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
    normalization: dict | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_checkpoint: str | None = None,
    classifier: nn.Module | None = None,
    localiser: str = DEFAULT_LOCALISER,
) -> WeakResult:
    """Localisation maps, weak masks, then ``config.method`` (normally ``cam_weak``).

    ``tags[i]`` holds one 1/0/-1 per slice of ``images[i]``. ``user_labels`` (255 = not
    annotated) are dense or sparse labels the user also has: they win over weak masks.
    ``classifier_steps`` defaults to half of ``config.steps``; a trained ``classifier`` (a U-Net
    with a cls head) is reused instead of training one. ``localiser`` is one of
    :data:`training.weak.localise.LOCALISERS`; the classifier is trained only when it uses the CAM.
    Progress events carry
    ``phase`` = ``classifier`` | ``segmentation`` and a ``step``/``total`` over both phases.
    """
    emit = on_event or (lambda e: None)
    if len(images) != len(tags):
        raise DataError("need one tag array per image volume")
    norm = dict(normalization or DEFAULT_NORMALIZATION)
    vols = [np.asarray(im)[None] if np.asarray(im).ndim == 2 else np.asarray(im) for im in images]
    x = [normalize_intensity(v, norm) for v in vols]
    if localiser not in LOCALISERS:
        raise DataError(f"unknown localiser {localiser!r}; choose from {', '.join(LOCALISERS)}")
    wants_cam = "cam" in localiser
    n_cls = int(classifier_steps if classifier_steps is not None else max(config.steps // 2, 1))
    if not wants_cam or classifier is not None:
        n_cls = 0
    grand_total = n_cls + config.steps

    def cls_event(e: Event) -> None:
        emit({**e, "total": grand_total})

    clf = classifier
    if clf is None and wants_cam:
        clf = train_classifier(x, tags, size=config.size, steps=n_cls, lr=3e-3, base=config.base,
                               depth=config.depth, seed=config.seed,
                               device=pick_device(config.device), on_event=cls_event,
                               should_stop=should_stop)
        if clf is None:
            emit({"type": "cancelled", "phase": "classifier"})
            return WeakResult(None, None, [], [])
    cls_path = None
    if clf is not None:
        cls_path = str(classifier_path(config.checkpoint))
        save_checkpoint(cls_path, clf, {
            "num_classes": 2, "class_names": ["background", "structure"], "normalization": norm,
            "dims": 2, "method": "tag_classifier", "size": list(config.size), "downsample": 1.0,
            "seed": config.seed, "total_steps": n_cls,
        })
    cams, weak, labels = [], [], []
    for i, (v, tg) in enumerate(zip(x, tags, strict=True)):
        cam = localisation_maps(localiser, v, np.asarray(tg), clf, config.size)
        w = weak_masks(v, cam, np.asarray(tg), **WEAK_MASK_RECIPE[localiser])
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
        trusted_share=0.5,
    )

    def seg_event(e: Event) -> None:
        if e.get("type") == "progress":
            e = {**e, "phase": "segmentation", "step": n_cls + e["step"], "total": grand_total}
        emit(e)

    # recorded in the checkpoint, so that `semiseg predict --cam` shows the same kind of map
    cfg = replace(config, num_classes=2,
                  method_opts={**config.method_opts, "localiser": localiser})
    path = train(cfg, data, on_event=seg_event, should_stop=should_stop,
                 init_checkpoint=init_checkpoint)
    return WeakResult(path, cls_path, cams, weak)


def localisation_maps(localiser: str, x: np.ndarray, tags: np.ndarray | None,
                      classifier: nn.Module | None, size) -> np.ndarray:
    """The (z, y, x) map in [0, 1] that seeds weak masks, for a normalised volume."""
    if localiser == "anomaly":
        return anomaly_map(x, tags)
    if classifier is None:
        raise DataError(f"localiser {localiser!r} needs a tag classifier")
    cam, _ = volume_cam(classifier, x, size, normalised=True)
    return cam if localiser == "cam" else combine(cam, anomaly_map(x, tags))

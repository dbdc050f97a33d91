"""cam_weak: pseudo-label masking, the method's training step, and train_from_tags end to end."""

from __future__ import annotations

import numpy as np
import torch

from training import IGNORE_INDEX
from training.engine.checkpoint import load_checkpoint
from training.fit.trainer import TrainConfig
from training.methods import METHODS, get_method
from training.methods.cam_weak import pseudo_labels, split_weak, teacher_agreement
from training.weak.from_tags import classifier_path, train_from_tags
from training.weak.weak_masks import WEAK_BASE


def test_pseudo_labels_keep_trusted_and_confident_and_ignore_uncertain():
    w0, w1 = WEAK_BASE, WEAK_BASE + 1
    labels = torch.tensor([[[0, 1, w1, w1, w0, IGNORE_INDEX]]])
    # teacher probability of class 1 per voxel
    p1 = torch.tensor([[[0.99, 0.01, 0.95, 0.55, 0.97, 0.99]]])
    probs = torch.stack([1 - p1, p1], dim=1)
    target = pseudo_labels(labels, probs, threshold=0.8)
    # trusted 0/1 kept even where the teacher disagrees; weak: confident -> teacher's label,
    # uncertain -> 255; not annotated stays 255
    assert target.tolist() == [[[0, 1, 1, IGNORE_INDEX, 1, IGNORE_INDEX]]]
    decoded, weak = split_weak(labels)
    assert decoded.tolist() == [[[0, 1, 1, 1, 0, IGNORE_INDEX]]]
    assert weak.tolist() == [[[False, False, True, True, True, False]]]


def test_a_teacher_that_has_not_learnt_the_masks_cannot_erase_them():
    w0, w1 = WEAK_BASE, WEAK_BASE + 1
    labels = torch.tensor([[[0, w0, w1, w1, w1, w0]]])
    blind = torch.tensor([[[0.01, 0.01, 0.02, 0.01, 0.03, 0.01]]])  # confident: background
    probs = torch.stack([1 - blind, blind], dim=1)
    assert teacher_agreement(labels, probs) == 0.0
    # without the gate every weak structure voxel becomes background: the collapse seen on LGG
    assert pseudo_labels(labels, probs, 0.8).tolist() == [[[0, 0, 0, 0, 0, 0]]]
    # with it the weak masks stay the target until the teacher agrees with them
    assert pseudo_labels(labels, probs, 0.8, min_agreement=0.5).tolist() == [[[0, 0, 1, 1, 1, 0]]]
    learnt = torch.tensor([[[0.01, 0.05, 0.97, 0.95, 0.3, 0.02]]])  # agrees on 2 of 3
    probs = torch.stack([1 - learnt, learnt], dim=1)
    assert teacher_agreement(labels, probs) == 0.8
    assert pseudo_labels(labels, probs, 0.8, min_agreement=0.5).tolist() == [
        [[0, 0, 1, 1, IGNORE_INDEX, 0]]]
    # no weak structure in the batch: nothing to disagree on
    assert teacher_agreement(torch.tensor([[[0, w0]]]), probs[..., :2]) == 1.0


def test_cam_weak_is_registered_and_steps():
    assert "cam_weak" in METHODS
    m = get_method("cam_weak", lr=1e-2, warmup_fraction=0.5)
    m.setup({"kind": "unet", "dims": 2, "in_channels": 1, "num_classes": 2, "base": 4,
             "depth": 2}, "cpu")
    lab = torch.full((2, 16, 16), WEAK_BASE, dtype=torch.long)
    lab[:, 4:10, 4:10] = WEAK_BASE + 1
    lab[1, 0] = 0  # a trusted row
    batch = {"image": torch.randn(2, 1, 16, 16), "label": lab}
    unl = {"image": torch.randn(2, 1, 16, 16)}
    warm = m.step(batch, unl, 0, 4)  # warm-up on the decoded weak masks
    later = m.step(batch, unl, 3, 4)  # teacher pseudo-labels + consistency
    assert set(warm) >= {"sup", "loss"} and "cons" in later
    assert all(np.isfinite(v) for v in later.values())
    alone = m.step(batch, None, 3, 4)  # every slice tagged: no unlabelled pool, still refines
    assert set(alone) == {"sup", "loss", "lr"} and np.isfinite(alone["loss"])


def test_train_from_tags_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    vol = rng.normal(100, 10, (8, 32, 32)).astype(np.float32)
    tags = np.array([1, 0, 1, 0, 1, 0, -1, -1], np.int8)
    for z in (0, 2, 4, 6):
        vol[z][(yy - 10 - z) ** 2 + (xx - 16) ** 2 < 25] += 80
    user = np.full(vol.shape, IGNORE_INDEX, np.uint8)
    user[6] = 0
    user[6][(yy - 16) ** 2 + (xx - 16) ** 2 < 25] = 1
    cfg = TrainConfig(method="cam_weak", steps=6, size=[32, 32], labeled_bs=2, unlabeled_bs=2,
                      base=4, depth=2, checkpoint=str(tmp_path / "weak.pt"), log_every=1)
    events = []
    res = train_from_tags([vol], [tags], cfg, user_labels=[user], classifier_steps=6,
                          on_event=events.append, localiser="cam")
    assert res.checkpoint and load_checkpoint(res.checkpoint)[1]["method"] == "cam_weak"
    assert res.classifier == str(classifier_path(res.checkpoint))
    model, _ = load_checkpoint(res.classifier)
    assert model.cls is not None
    assert res.cams[0].shape == vol.shape and res.weak[0].shape == vol.shape
    assert (res.weak[0][[1, 3, 5]] == 0).all() and (res.weak[0][[6, 7]] == IGNORE_INDEX).all()
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 12
    assert {e.get("phase") for e in events if e["type"] == "progress"} == {"classifier",
                                                                          "segmentation"}

"""A collapsed training is noticed while it runs and reported (training.fit.collapse)."""

import numpy as np
import torch
from test_training_synth import blob_volume

from training import IGNORE_INDEX
from training.engine.checkpoint import load_checkpoint
from training.engine.data import TrainData
from training.fit.collapse import CollapseWatch
from training.fit.trainer import TrainConfig, train


def test_a_loss_that_stops_moving_is_reported_once():
    watch = CollapseWatch(window=20)
    rng = np.random.default_rng(0)
    moving = [watch.loss(k, 0.8 - 0.01 * k + 0.01 * rng.random()) for k in range(40)]
    assert not any(moving)
    stuck = [watch.loss(40 + k, 0.5) for k in range(45)]
    said = [m for m in stuck if m]
    assert len(said) == 1 and "0.5000" in said[0]


def test_one_class_everywhere_is_reported_after_repeated_checks():
    watch = CollapseWatch(one_class_checks=3)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = 1
    labels[0, 0] = IGNORE_INDEX
    background = torch.zeros(2, 2, 8, 8)
    background[:, 0] = 5.0  # background wins everywhere
    healthy = background.clone()
    healthy[:, 1, 2:5, 2:5] = 10.0
    assert watch.prediction(50, healthy, labels) is None
    assert watch.prediction(100, background, labels) is None
    assert watch.prediction(150, background, labels) is None
    msg = watch.prediction(200, background, labels)
    assert msg and "class 0 everywhere" in msg and "[0, 1]" in msg
    # a batch whose labels hold one class says nothing about collapse
    fresh = CollapseWatch(one_class_checks=1)
    assert fresh.prediction(1, background, torch.zeros(2, 8, 8, dtype=torch.long)) is None


def test_a_training_that_does_not_learn_warns_and_the_checkpoint_keeps_it(tmp_path):
    img, lab = blob_volume(0, shape=(1, 16, 16))
    data = TrainData.from_arrays([img], [lab])
    # learning rate 0 on one unaugmented slice: the loss cannot move
    cfg = TrainConfig(steps=110, size=[16, 16], labeled_bs=1, unlabeled_bs=0, base=4, depth=2,
                      lr=0.0, augment="none", device="cpu", checkpoint=str(tmp_path / "m.pt"))
    events = []
    path = train(cfg, data, on_event=events.append)
    warnings = [e for e in events if e["type"] == "warning"]
    assert len(warnings) == 1 and "has not moved" in warnings[0]["message"]
    _, meta = load_checkpoint(path)
    assert meta["warnings"] == [warnings[0]["message"]]

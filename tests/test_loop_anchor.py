"""Anchored fine-tuning: the start model's confident voxels guard against a few-slice collapse."""

from __future__ import annotations

import numpy as np

from training import IGNORE_INDEX
from training.bench.simulate import synthetic_case
from training.engine.checkpoint import read_checkpoint
from training.interactive.loop import anchor_labels, finetune, sparse_labels


def test_anchor_keeps_confident_voxels_off_user_slices():
    probs = np.zeros((2, 3, 2, 2), np.float32)  # (C, z, y, x)
    probs[1] = 0.95
    probs[0] = 0.05
    probs[:, 1, 0, 0] = [0.5, 0.5]  # unsure voxel
    probs[:, 2, 1, 1] = [0.97, 0.03]  # confident background
    labels = np.full((3, 2, 2), IGNORE_INDEX, np.uint8)
    labels[0] = 0  # the user labelled slice 0 (all background)
    out = anchor_labels(probs, labels, 0.9)
    assert (out[0] == IGNORE_INDEX).all(), "the user's slice is the user's, not the model's"
    assert out[1, 0, 0] == IGNORE_INDEX, "unsure voxels are not pseudo-labelled"
    assert out[1, 1, 1] == 1 and out[2, 1, 1] == 0
    assert out.dtype == np.uint8


def test_anchored_finetune_trains_on_user_and_anchor_slices(tmp_path):
    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, train

    image, truth = synthetic_case((6, 32, 32), seed=1)
    start = train(TrainConfig(method="supervised", steps=5, size=[32, 32], base=4, depth=2,
                              labeled_bs=2, unlabeled_bs=0, checkpoint=str(tmp_path / "s.pt"),
                              device="cpu"),
                  TrainData.from_arrays([image], [truth]))
    events = []
    out = finetune(start, image, sparse_labels(truth, [2]), method="supervised", steps=3,
                   out_path=tmp_path / "ft.pt", device="cpu", anchor=0.5,
                   on_event=events.append)
    summary = read_checkpoint(out)["meta"]["data"]
    # the user's volume is repeated and the anchor volume added: more than one labelled volume
    assert summary["labeled_volumes"] >= 2
    assert any(e["type"] == "progress" for e in events)


def test_balanced_sampler_draws_each_labelled_volume_equally():
    from training.engine.data import TrainData
    from training.engine.patches import SliceSampler

    rng = np.random.default_rng(0)
    image = rng.normal(size=(10, 16, 16)).astype(np.float32)
    user = np.full((10, 16, 16), IGNORE_INDEX, np.uint8)
    user[4] = 1  # one user slice ...
    anchors = np.zeros((10, 16, 16), np.uint8)
    anchors[4] = IGNORE_INDEX  # ... against nine anchor slices
    for balance, expected in [(False, 0.1), (True, 0.5)]:
        data = TrainData.from_arrays([image, image], [user, anchors])
        data.balance_volumes = balance
        sampler = SliceSampler(data, (16, 16), labeled_bs=400, unlabeled_bs=0)
        batch, _ = sampler.next()
        share = (batch["label"].reshape(400, -1) == 1).all(1).float().mean().item()
        assert abs(share - expected) < 0.08, (balance, share)

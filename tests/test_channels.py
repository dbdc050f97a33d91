"""Scans with several channels (LGG's pre-contrast / FLAIR / post-contrast RGB slices): held,
sampled, trained and predicted with every channel, each normalised on its own."""

import numpy as np
import pytest

from training import IGNORE_INDEX
from training.engine.augment import Augmentation
from training.engine.data import DataError, TrainData
from training.engine.patches import SliceSampler


def _rgb_scan(seed=0, shape=(6, 40, 48)):
    """A (z, y, x, 3) scan whose square shows only in its last channel: the first two are
    noise on grey scales of their own, so a grey (one-channel) reader cannot find it."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    labels = np.zeros(shape, np.uint8)
    y0, x0 = rng.integers(4, h - 16), rng.integers(4, w - 16)
    labels[:, y0:y0 + 12, x0:x0 + 12] = 1
    image = np.stack([rng.normal(100, 20, shape), rng.normal(2000, 300, shape),
                      rng.normal(50, 5, shape) + 40.0 * labels], -1).astype(np.float32)
    return image, labels


def test_channels_are_held_first_and_normalised_one_by_one():
    image, labels = _rgb_scan()
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    assert data.channels == 3
    held = data.images[0]
    assert held.shape == (6, 3, 40, 48)
    for k in range(3):  # each channel z-scored alone, whatever its own grey scale
        assert abs(float(held[:, k].mean())) < 0.05
        assert abs(float(held[:, k].std()) - 1) < 0.05


def test_bad_channel_input_is_refused_clearly():
    image, labels = _rgb_scan()
    with pytest.raises(DataError, match="differ in channels"):
        TrainData.from_arrays([image, image[..., 0]], [labels, labels])
    with pytest.raises(DataError, match="label shape"):
        TrainData.from_arrays([image], [labels[:, :-1]])
    with pytest.raises(DataError, match="NaN"):
        bad = image.copy()
        bad[0, 0, 0, 2] = np.nan
        TrainData.from_arrays([bad], [labels])


def test_patches_keep_channels_and_labels_aligned():
    image, labels = _rgb_scan()
    image[..., 0] = labels * 10.0  # channel 0 repeats the labels, channel 2 too (scaled)
    labels[:2] = IGNORE_INDEX  # two slices not painted
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    s = SliceSampler(data, (32, 32), labeled_bs=16, unlabeled_bs=4, seed=3,
                     augmentation=Augmentation(p_gamma=0, p_contrast=0, p_brightness=0,
                                               p_noise=0))
    lab_batch, unl_batch = s.next()
    img, lab = lab_batch["image"], lab_batch["label"]
    assert img.shape == (16, 3, 32, 32) and unl_batch["image"].shape == (4, 3, 32, 32)
    known = lab != IGNORE_INDEX
    inside = img[:, 0] > 0  # z-scored: the structure above the mean, the rest below
    # where channel 0 says "structure", the labels do too (nearest vs bilinear at edges aside)
    agree = (inside[known] == (lab[known] == 1)).float().mean()
    assert agree > 0.97


def test_a_three_channel_model_trains_and_predicts_from_rgb(tmp_path):
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import dice_hd95
    from training.fit.trainer import TrainConfig, train

    scans = [_rgb_scan(k) for k in range(3)]
    data = TrainData.from_arrays([s[0] for s in scans], [s[1] for s in scans], num_classes=2)
    cfg = TrainConfig(steps=60, size=[32, 32], labeled_bs=4, unlabeled_bs=0, base=4, depth=2,
                      device="cpu", checkpoint=str(tmp_path / "rgb.pt"), lr=3e-3)
    model, meta = load_checkpoint(train(cfg, data))
    assert model_channels(meta) == 3
    image, labels = _rgb_scan(7)  # an unseen scan
    out = predict_volume(model, meta, image)
    assert out["labels"].shape == labels.shape and out["uncertainty"].shape == labels.shape
    dice = dice_hd95(out["labels"], labels, 2)["dice"][0]
    assert dice > 0.8  # the square is only in channel 2: the network reads it
    with pytest.raises(ValueError, match="3 channels"):
        predict_volume(model, meta, image[..., 1])  # a grey scan for an RGB model


def test_channels_need_the_native_grid_2d_recipe(tmp_path):
    from training.fit.trainer import TrainConfig, train

    image, labels = _rgb_scan()
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    for extra in ({"dims": 3, "size": [4, 16, 16]}, {"sampling": "resize", "size": [32, 32]}):
        cfg = TrainConfig(steps=1, labeled_bs=1, unlabeled_bs=0, base=4, depth=2,
                          device="cpu", checkpoint=str(tmp_path / "x.pt"), **extra)
        with pytest.raises(DataError, match="channels"):
            train(cfg, data)

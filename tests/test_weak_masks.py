"""Weak masks from CAMs: the image-driven refinement beats plain thresholding on a known case."""

from __future__ import annotations

import numpy as np
import pytest

from training import IGNORE_INDEX
from training.engine.metrics import dice
from training.weak.weak_masks import (
    WEAK_BASE,
    combine_labels,
    encode_weak,
    normalise_cam,
    refine_mask,
    threshold_mask,
    weak_masks,
)


def lesion_case(seed: int = 0):
    """A bright ellipse (the answer) in noise, and a CAM like a real one: a smooth blob over the
    lesion's most telling part, off-centre and rounder than the lesion, plus a faint false spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96].astype(float)
    truth = ((yy - 48) / 14) ** 2 + ((xx - 44) / 26) ** 2 <= 1
    image = 1.0 * truth + rng.normal(0, 0.25, truth.shape)
    cam = np.exp(-(((yy - 50) ** 2 + (xx - 52) ** 2) / (2 * 13.0**2)))
    cam += 0.35 * np.exp(-(((yy - 15) ** 2 + (xx - 80) ** 2) / (2 * 4.0**2)))
    return image, cam * 7.0, truth


def test_refinement_beats_thresholding_on_a_known_case():
    for seed in range(3):
        image, cam, truth = lesion_case(seed)
        plain = dice(threshold_mask(cam, 0.5), truth)
        refined = dice(refine_mask(image, cam), truth)
        assert refined > plain + 0.1, (seed, plain, refined)
        assert refined > 0.85


def test_normalise_and_small_components():
    cam = np.zeros((2, 20, 20), np.float32)
    cam[0, 5:10, 5:10] = 4.0
    cam[0, 15, 15] = 3.0  # a one-pixel speck above threshold
    cam[1] = -1.0
    n = normalise_cam(cam)
    assert n[0].max() == pytest.approx(1.0) and n[1].max() == 0.0
    m = threshold_mask(cam[0], 0.5, min_size=4)
    assert m[5:10, 5:10].all() and not m[15, 15]


def test_weak_masks_follow_tags():
    image, cam, truth = lesion_case()
    vol = np.stack([image, image, image])
    cams = np.stack([cam, cam, cam])
    tags = np.array([1, 0, -1], np.int8)
    w = weak_masks(vol, cams, tags)
    assert w.dtype == np.uint8
    assert dice(w[0], truth) > 0.85
    assert (w[1] == 0).all()  # negative tag: empty mask, whatever the CAM says
    assert (w[2] == IGNORE_INDEX).all()  # untagged: not annotated
    plain = weak_masks(vol, cams, tags, refine=False)
    assert dice(plain[0], truth) < dice(w[0], truth)


def test_encoding_keeps_user_labels_and_negative_tags_trusted():
    weak = np.array([[[1, 0]], [[0, 0]], [[IGNORE_INDEX, IGNORE_INDEX]]], np.uint8)
    enc = encode_weak(weak, np.array([1, 0, -1]))
    assert enc[0].tolist() == [[WEAK_BASE + 1, WEAK_BASE]]
    assert enc[1].tolist() == [[0, 0]]  # negative slice stays trusted background
    assert (enc[2] == IGNORE_INDEX).all()
    user = np.full_like(weak, IGNORE_INDEX)
    user[0, 0, 1] = 1
    assert combine_labels(user, enc)[0].tolist() == [[WEAK_BASE + 1, 1]]


def test_threshold_mask_can_keep_only_the_largest_blob():
    from training.weak.weak_masks import threshold_mask

    m = np.zeros((32, 32), np.float32)
    m[2:12, 2:12] = 1.0  # 100 px
    m[20:26, 20:26] = 0.9  # 36 px
    both = threshold_mask(m, 0.5, min_size=5)
    one = threshold_mask(m, 0.5, min_size=5, largest=True)
    assert both.sum() == 136 and one.sum() == 100 and one[5, 5] and not one[22, 22]

"""CAM and Grad-CAM on synthetic slices whose class is decided by a known blob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.engine.losses import supervised_loss
from training.engine.networks import UNet
from training.weak.cam import grad_cam, train_classifier, volume_cam


def blob_slices(n: int = 48, size: int = 32, seed: int = 0):
    """Half the slices hold a bright disc (the class); all hold a dark square (a distractor)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    imgs, masks, tags = [], [], []
    for i in range(n):
        img = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        sy, sx = rng.integers(2, size - 8, 2)
        img[sy:sy + 6, sx:sx + 6] -= 2.0  # distractor present in both classes
        mask = np.zeros((size, size), bool)
        if i % 2 == 0:
            while True:
                cy, cx = rng.integers(6, size - 6, 2)
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
                if not mask[sy:sy + 6, sx:sx + 6].any():
                    break
            img[mask] += 2.0  # bright disc: the class; the dark square is a distractor
        imgs.append(img)
        masks.append(mask)
        tags.append(int(i % 2 == 0))
    return np.stack(imgs), np.stack(masks), np.array(tags, np.int8)


@pytest.fixture(scope="module")
def blobs():
    return blob_slices()


def test_cam_peak_lies_in_the_blob(blobs):
    imgs, masks, tags = blobs
    torch.manual_seed(0)
    clf = train_classifier([imgs], [tags], size=(32, 32), steps=80, batch_size=16, base=8,
                           depth=2, seed=0)
    cam, prob = volume_cam(clf, imgs, (32, 32), normalised=True)
    assert cam.shape == imgs.shape and 0 <= cam.min() and cam.max() <= 1.0 + 1e-6
    pos = np.flatnonzero(tags == 1)
    hits = [masks[i].ravel()[cam[i].argmax()] for i in pos]
    assert np.mean(hits) >= 0.8, f"CAM peak in the blob on {np.mean(hits):.0%} of slices"
    # the classifier separates the classes on its training slices
    assert prob[tags == 1].mean() > prob[tags == 0].mean() + 0.3


def test_grad_cam_of_a_segmentation_network_peaks_in_the_blob(blobs):
    imgs, masks, _ = blobs
    torch.manual_seed(0)
    net = UNet(2, 1, 2, base=8, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.from_numpy(imgs).unsqueeze(1)
    y = torch.from_numpy(masks.astype(np.int64))
    for _ in range(40):
        loss = supervised_loss(net(x)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pos = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    cam = grad_cam(net, x[pos]).numpy()
    assert cam.shape == (len(pos), 32, 32) and cam.max() <= 1.0 + 1e-6
    hits = [masks[i].ravel()[cam[k].argmax()] for k, i in enumerate(pos)]
    assert np.mean(hits) >= 0.7
    assert all(p.grad is None for p in net.parameters())  # no gradient left behind

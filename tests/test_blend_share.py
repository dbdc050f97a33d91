"""The blend's share read off the painted slices: a network that drew them right earns it."""

from __future__ import annotations

import numpy as np
import pytest

from training.interactive.blend_share import SHARES, choose_share, painted_between, share_scores
from training.interactive.loop import sparse_labels


def _ellipsoid() -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.ogrid[:21, :32, :32]
    truth = (((z - 10) / 8.5) ** 2 + ((y - 16) / 10) ** 2 + ((x - 16) / 10) ** 2 <= 1)
    # a scan that does not show the outline: only the painted slices can tell the fill
    image = np.random.default_rng(0).normal(0, 1, truth.shape).astype(np.float32)
    return image, truth.astype(np.uint8)


def test_a_network_that_drew_the_painted_slice_right_earns_the_share():
    image, truth = _ellipsoid()
    labels = sparse_labels(truth, [2, 10, 18])  # the ends' sections are thin: a poor fill
    knows = np.stack([1 - truth, truth]).astype(np.float32)
    scores = share_scores(knows, labels, image, 10)
    assert set(scores) == set(SHARES)
    assert scores[1.0] == pytest.approx(1.0) and scores[0.0] < 0.8, scores
    assert choose_share([scores], 0.3) > 0.3
    # a network that sees nothing there, neighbours with full sections: the fill is the better
    blind = np.stack([np.ones(truth.shape), np.zeros(truth.shape)]).astype(np.float32)
    scores = share_scores(blind, sparse_labels(truth, [6, 10, 14]), image, 10)
    assert scores[1.0] == 0.0 and scores[0.0] > 0.5, scores
    assert choose_share([scores], 0.3) < 0.3


def test_only_a_slice_between_two_painted_ones_is_read():
    image, truth = _ellipsoid()
    labels = sparse_labels(truth, [2, 10, 18])
    probs = np.stack([1 - truth, truth]).astype(np.float32)
    assert painted_between(labels, 10) == (2, 18)
    assert painted_between(labels, 2) is None and share_scores(probs, labels, image, 18) is None
    empty = sparse_labels(np.zeros_like(truth), [0, 1, 2])  # nothing shown anywhere
    assert share_scores(np.stack([np.ones(truth.shape), np.zeros(truth.shape)]), empty,
                        image, 1) is None


def test_the_share_is_the_best_on_average_and_ties_keep_the_default():
    assert choose_share([], 0.3) == 0.3
    assert choose_share([None, {}], 0.3) == 0.3
    even = {s: 0.8 for s in SHARES}
    assert choose_share([even], 0.3) == 0.3
    rising = {s: 0.5 + 0.4 * s for s in SHARES}
    falling = {s: 0.9 - 0.2 * s for s in SHARES}
    assert choose_share([rising], 0.3) == 1.0
    assert choose_share([rising, falling], 0.3) == 1.0  # 0.7 + 0.2 s on average
    assert choose_share([{**rising, 1.0: float("nan")}], 0.3) == 0.85  # NaN: not scored


def test_a_retrain_reads_its_share_off_the_fresh_slices_and_carries_the_evidence(
        disc_model, tmp_path):
    from training.interactive.retrain import Shown, retrain_once

    image, truth = _ellipsoid()
    shown = Shown(fuse_weight=0.3, share_from_painted=True)
    labels = sparse_labels(truth, [2, 10, 18])
    kw = {"method": "supervised", "steps": 1, "labeled_bs": 2, "unlabeled_bs": 0}
    first = retrain_once(disc_model, image, labels, tmp_path / "a.pt", shown=shown,
                         fresh=[2, 10, 18], **kw)
    # one slice lies between two painted ones: one row of evidence, and the share it chose
    assert len(first.share_evidence) == 1
    assert first.share == choose_share(first.share_evidence, 0.3)
    # nothing fresh: the evidence so far decides; here it says the network draws best
    told = [{s: 0.5 + 0.4 * s for s in SHARES}]
    second = retrain_once(disc_model, image, labels, tmp_path / "b.pt", shown=shown,
                          share_evidence=told, **kw)
    assert second.share == 1.0 and second.share_evidence == told
    alone = retrain_once(disc_model, image, labels, tmp_path / "c.pt",
                         shown=Shown(fuse_weight=1.0), **kw)
    np.testing.assert_array_equal(second.prediction, alone.prediction)  # same seed, same net
    # without the option the share stays as set
    fixed = retrain_once(disc_model, image, labels, tmp_path / "d.pt",
                         shown=Shown(fuse_weight=0.3), fresh=[10], share_evidence=told, **kw)
    assert fixed.share == 0.3 and fixed.share_evidence == told


def test_a_new_model_not_yet_taught_reads_nothing_off_the_painted_slices(tmp_path):
    from training.interactive.new_model import new_model
    from training.interactive.retrain import Shown, retrain_once

    image, truth = _ellipsoid()
    start = new_model(tmp_path / "new.pt", ["background", "disc"], seed=0)
    result = retrain_once(start, image, sparse_labels(truth, [2, 10, 18]), tmp_path / "a.pt",
                          shown=Shown(fuse_weight=0.3, share_from_painted=True),
                          fresh=[2, 10, 18], method="supervised", steps=1, labeled_bs=2,
                          unlabeled_bs=0)
    assert result.share_evidence == [] and result.share == 0.3

"""The interpolation baseline ("fill between slices") scored on shapes with a known answer."""

import numpy as np
import pytest

from training import IGNORE_INDEX
from training.interactive.interpolation import even_slices, interpolate_between_slices


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _cone(n=21, size=64):
    """Discs whose radius grows linearly along z: the exact answer of shape interpolation."""
    z, y, x = np.mgrid[0:n, 0:size, 0:size]
    radius = 6 + z  # 6 .. 26 pixels
    return ((y - 32) ** 2 + (x - 32) ** 2 <= radius**2).astype(np.uint8)


def test_cone_is_recovered_from_its_two_end_slices():
    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[0, 20]] = truth[[0, 20]]
    filled = interpolate_between_slices(sparse)
    inner = slice(1, 20)
    assert _dice(filled[inner] == 1, truth[inner] == 1) > 0.98
    np.testing.assert_array_equal(filled[[0, 20]], truth[[0, 20]])  # painted slices kept


def test_two_classes_and_a_structure_that_ends():
    truth = _cone()
    truth[:, 30:35, 30:35] = 2  # a small second structure inside
    truth[15:] = np.where(truth[15:] == 2, 1, truth[15:])  # which ends at slice 15
    painted = [0, 10, 20]
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[painted] = truth[painted]
    filled = interpolate_between_slices(sparse)
    assert (filled[1:10] == 2).sum() > 0.8 * (truth[1:10] == 2).sum()
    assert (filled[16:20] == 2).sum() == 0  # shrinks to nothing before the empty slice
    assert _dice(filled > 0, truth > 0) > 0.97


def test_outside_the_painted_range_is_background():
    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[5, 15]] = truth[[5, 15]]
    filled = interpolate_between_slices(sparse)
    assert filled[:5].max() == 0 and filled[16:].max() == 0


def test_even_slices_span_the_structure():
    truth = np.zeros((30, 4, 4), np.uint8)
    truth[7:23, 1:3, 1:3] = 1
    assert even_slices(truth, 5) == [7, 11, 14, 18, 22]
    assert even_slices(truth, 1) == [14]
    assert even_slices(np.zeros((5, 2, 2), np.uint8), 3) == []


def test_ranking_prefers_slices_with_the_structure_over_noisy_empty_ends():
    from training.interactive.loop import rank_uncertain_slices

    unc = np.full((6, 20, 20), 0.1)
    unc[0] = unc[5] = 0.9  # empty end slices full of noise: pure entropy picks them
    pred = np.zeros((6, 20, 20), np.uint8)
    pred[1:5, 8:12, 8:12] = 1
    unc[3, 6:14, 6:14] = 0.5  # the structure's boundary is unsure on slice 3
    assert rank_uncertain_slices(unc, [])[0][0] in (0, 5)
    ranked = rank_uncertain_slices(unc, [], prediction=pred)
    assert [i for i, _ in ranked[:4]] == [3, 1, 2, 4] and {i for i, _ in ranked[4:]} == {0, 5}
    assert [i for i, _ in rank_uncertain_slices(unc, [3], prediction=pred)][0] == 1


def test_interpolation_prior_labels_only_the_sure_part_between_painted_slices():
    from training.interactive.interpolation import interpolation_prior

    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[4, 16]] = truth[[4, 16]]
    prior = interpolation_prior(sparse, band=2)
    assert (prior[[4, 16]] == IGNORE_INDEX).all()  # the user's slices train as themselves
    assert (prior[:4] == IGNORE_INDEX).all() and (prior[17:] == IGNORE_INDEX).all()
    sure = prior[5:16] != IGNORE_INDEX
    assert 0.5 < sure.mean() < 1.0  # a band around each boundary is left out
    assert (prior[5:16][sure] == truth[5:16][sure]).mean() > 0.99
    one = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    one[10] = truth[10]
    assert (interpolation_prior(one) == IGNORE_INDEX).all()


def test_the_prior_takes_its_pseudo_labels_from_another_fill_when_given():
    """The registered fill is the better guess between painted slices: the prior's
    pseudo-labels follow it, with the same band left out and the painted slices untouched."""
    from training.interactive.interpolation import interpolation_prior

    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[4, 16]] = truth[[4, 16]]
    other = np.zeros_like(truth)
    other[:, 10:30, 10:30] = 1  # a square, which interpolating the discs would never give
    prior = interpolation_prior(sparse, band=2, filled=other)
    sure = prior[5:16] != IGNORE_INDEX
    assert (prior[5:16][sure] == other[5:16][sure]).all()
    assert (prior[5:16][sure] != truth[5:16][sure]).any()  # not the interpolation's
    assert (prior[[4, 16]] == IGNORE_INDEX).all() and (prior[:4] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="shape"):
        interpolation_prior(sparse, filled=other[:-1])


def test_soft_interpolation_and_fusion():
    from training.interactive.interpolation import (
        fuse_with_interpolation,
        interpolation_probabilities,
    )

    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[2, 18]] = truth[[2, 18]]
    probs, covered = interpolation_probabilities(sparse, 2)
    assert covered[2:19].all() and not covered[:2].any() and not covered[19:].any()
    np.testing.assert_allclose(probs.sum(0)[2:19], 1, atol=1e-5)
    assert _dice(probs[1, 3:18] > 0.5, truth[3:18] == 1) > 0.97  # 0.5 = the hard interpolation
    # an undecided network: the prior decides where it covers
    unsure = np.full((2, *truth.shape), 0.5, np.float32)
    fused = fuse_with_interpolation(unsure, sparse, weight=0.3)
    assert _dice(fused[3:18] == 1, truth[3:18] == 1) > 0.97
    # a network sure there is nothing pulls the outline in, in proportion to its weight
    blind = np.stack([np.ones(truth.shape), np.zeros(truth.shape)]).astype(np.float32)
    fused = fuse_with_interpolation(blind, sparse, weight=0.3)
    assert 0 < (fused[3:18] == 1).sum() < (truth[3:18] == 1).sum()
    assert fused[:2].max() == 0  # outside the painted range the network decides
    assert (fuse_with_interpolation(blind, sparse, weight=1.0) == 0).all()


def _cone_half_missed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, its slices 2 and 18 painted, the probabilities of a network sure of the truth
    on slices 3-9 and sure there is nothing on 10-17)."""
    truth = _cone()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[2, 18]] = truth[[2, 18]]
    sure = np.stack([1.0 - truth, truth]).astype(np.float32)
    sure[:, 10:18] = np.stack([np.ones(truth.shape), np.zeros(truth.shape)])[:, 10:18]
    return truth, sparse, sure


def test_the_blend_is_unsure_where_the_network_and_the_fill_disagree():
    from training.engine.inference import entropy_map
    from training.interactive.loop import shape_prior_prediction, shape_prior_with_uncertainty

    truth, sparse, sure = _cone_half_missed()
    shown, unc = shape_prior_with_uncertainty(sure, sparse, 0.3)
    assert (shown == shape_prior_prediction(sure, sparse, 0.3)).all()
    assert entropy_map(sure).max() < 1e-6  # the network alone is sure everywhere
    inside = truth == 1
    agree, disagree = unc[3:10][inside[3:10]].mean(), unc[10:18][inside[10:18]].mean()
    assert disagree > 0.6 and disagree > 1.5 * agree  # agreeing, unsure only near the outline
    assert unc[:2].max() < 1e-6  # outside the painted range: the network's own


def test_where_a_structure_ends_between_painted_slices_can_be_left_to_the_network():
    from training.interactive.interpolation import (
        fuse_with_interpolation,
        interpolation_prior,
        interpolation_probabilities,
    )

    truth = _cone()
    truth[15:] = 0  # the structure ends at slice 14
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[4, 10]] = truth[[4, 10]]
    sparse[19] = 0  # painted empty: the structure ends somewhere in 11..18
    assert truth[10].any() and not truth[19].any()
    _, shrink = interpolation_probabilities(sparse, 2, ends="shrink")
    probs, covered = interpolation_probabilities(sparse, 2, ends="unknown")
    assert shrink[4:20].all()
    assert covered[4:11].all() and covered[19] and not covered[11:19].any()
    assert (probs[:, 11:19] == 0).all()
    prior = interpolation_prior(sparse, band=2, ends="unknown")
    assert (prior[11:19] == IGNORE_INDEX).all() and (prior[5:10] != IGNORE_INDEX).any()
    assert (interpolation_prior(sparse, band=2, ends="shrink")[11:19] != IGNORE_INDEX).any()
    # a network sure of the structure keeps it in the unknown gap, not in a shrinking one
    sure = np.stack([truth == 0, truth == 1]).astype(np.float32)
    kept = fuse_with_interpolation(sure, sparse, weight=0.3, ends="unknown")
    assert np.array_equal(kept[11:19], truth[11:19])
    with pytest.raises(ValueError, match="ends"):
        interpolation_prior(sparse, ends="guess")


def test_disagreement_counts_only_where_the_network_and_the_fill_differ():
    from training.engine.inference import entropy_map
    from training.interactive.loop import disagreement_uncertainty

    truth, sparse, sure = _cone_half_missed()
    own = entropy_map(sure)
    unc = disagreement_uncertainty(sure, own, sparse, 0.3)
    inside = truth == 1
    # agreeing (but on a pixel of outline): the network's own, 0; the fill's band left out
    assert unc[3:10][inside[3:10]].mean() < 0.1
    assert unc[10:18][inside[10:18]].mean() > 0.5  # the fill says cone, the network nothing
    assert (unc[:2] == own[:2]).all()  # outside the painted range: the network's own


def test_the_network_share_by_gap_is_zero_on_painted_slices_and_full_midway():
    from training.interactive.interpolation import gap_position, gap_shares

    t = gap_position(11, [2, 6, 10])
    np.testing.assert_allclose(t[[2, 6, 10]], 0)
    np.testing.assert_allclose(t[[4, 8]], 1)  # midway between two painted slices
    np.testing.assert_allclose(t[[3, 5]], 0.5)
    np.testing.assert_allclose(gap_shares(11, [2, 6, 10], 0.7)[[2, 3, 4]],
                               [0, 0.7 * np.sqrt(0.5), 0.7])
    # laid out along the painted axis, to weigh (C, ...) probabilities
    from training.interactive.interpolation import network_share

    labels = np.full((4, 11, 5), IGNORE_INDEX, np.uint8)
    labels[:, [2, 6, 10]] = 0
    share = network_share(labels, 0.7, axis=1, by_gap=True)
    assert share.shape == (1, 1, 11, 1)
    np.testing.assert_allclose(share.ravel(), gap_shares(11, [2, 6, 10], 0.7), rtol=1e-6)
    assert network_share(labels, 0.3, axis=1) == 0.3


def _bulge(n=21, size=64):
    """Discs whose radius bulges along z (6 at the ends, 26 in the middle): shape
    interpolation between the first, middle and last slices cuts the bulge's sides."""
    z, y, x = np.mgrid[0:n, 0:size, 0:size]
    radius = 6 + 20 * np.sin(np.pi * z / (n - 1))
    return ((y - 32) ** 2 + (x - 32) ** 2 <= radius**2).astype(np.uint8)


def test_a_share_by_gap_lets_a_good_network_show_midway_and_keeps_the_fill_by_painted_slices():
    from training.interactive.interpolation import fuse_with_interpolation

    truth = _bulge()
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[0, 10, 20]] = truth[[0, 10, 20]]
    right = np.stack([1.0 - truth, truth]).astype(np.float32)  # a network that has it right
    mid = [4, 5, 6, 14, 15, 16]
    fill = fuse_with_interpolation(right, sparse, weight=0.0)
    constant = fuse_with_interpolation(right, sparse, weight=0.3)
    by_gap = fuse_with_interpolation(right, sparse, weight=0.7, by_gap=True)
    assert _dice(fill[mid] == 1, truth[mid] == 1) < 0.9  # the fill misses the bulge there
    assert _dice(constant[mid] == 1, truth[mid] == 1) < 0.9  # and 0.3 of the network keeps it
    assert _dice(by_gap[mid] == 1, truth[mid] == 1) > 0.99
    np.testing.assert_array_equal(by_gap[[0, 10, 20]], truth[[0, 10, 20]])
    # what the dock shows takes the same blend
    from training.interactive.retrain import Shown

    shown = Shown(fuse_weight=0.7, share_by_gap=True).show(
        {"labels": right.argmax(0).astype(np.uint8), "probabilities": right}, sparse)
    np.testing.assert_array_equal(shown, by_gap)
    # next to a painted slice the fill outweighs a network sure there is nothing
    blind = np.stack([np.ones(truth.shape), np.zeros(truth.shape)]).astype(np.float32)
    near = [1, 9, 11, 19]
    kept = fuse_with_interpolation(blind, sparse, weight=0.7, by_gap=True)[near] == 1
    lost = fuse_with_interpolation(blind, sparse, weight=0.7)[near] == 1
    assert kept.sum() > 0.8 * (fill[near] == 1).sum() and lost.sum() == 0

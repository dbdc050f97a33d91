"""The loop's pure functions (training.interactive.loop): ranking, sparse labels, held-back split,
judgement,
and a real (tiny) fine-tune."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from training import IGNORE_INDEX
from training.bench.simulate import synthetic_case
from training.engine.checkpoint import load_checkpoint, save_checkpoint
from training.engine.networks import UNet
from training.interactive.loop import (
    NoLabelledSlicesError,
    annotated_slices,
    choose_slices,
    even_slices,
    finetune,
    keep_main_structure,
    main_structure_mask,
    rank_uncertain_slices,
    sparse_labels,
    split_held_back,
)

META = {"num_classes": 2, "class_names": ["background", "disc"], "dims": 2, "size": [32, 32],
        "normalization": {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_checkpoint(path, UNet(2, 1, 2, base=4, depth=2), META)


def test_rank_orders_by_mean_uncertainty_and_skips_labelled():
    u = np.zeros((5, 4, 4), np.float32)
    for i, level in enumerate([0.1, 0.9, 0.5, 0.7, 0.3]):
        u[i] = level
    assert [i for i, _ in rank_uncertain_slices(u)] == [1, 3, 2, 4, 0]
    ranked = rank_uncertain_slices(u, labelled=[1, 2])
    assert [i for i, _ in ranked] == [3, 4, 0]
    assert ranked[0][1] == pytest.approx(0.7)
    mask = np.array([False, True, False, True, False])
    assert [i for i, _ in rank_uncertain_slices(u, mask)] == [2, 4, 0]


def test_rank_along_other_axes_and_nan_slices_last():
    u = np.zeros((3, 4, 5), np.float32)
    u[:, :, 2] = 1.0  # x = 2 is the most uncertain column-slice
    u[:, :, 4] = 0.5
    assert [i for i, _ in rank_uncertain_slices(u, axis=2)][:2] == [2, 4]
    assert [i for i, _ in rank_uncertain_slices(u, [2], axis=-1)][0] == 4
    u2 = np.ones((3, 2, 2), np.float32)
    u2[0] = np.nan
    assert [i for i, _ in rank_uncertain_slices(u2)][-1] == 0
    with pytest.raises(IndexError):
        rank_uncertain_slices(u2, [7])


def test_coverage_sends_the_user_away_from_slices_just_painted():
    # the structure spans slices 2..17; the model is most unsure right next to painted slice 10
    u = np.full((20, 8, 8), 0.5)
    u[11:14] = 0.9
    pred = np.zeros((20, 8, 8), np.uint8)
    pred[2:18, 2:6, 2:6] = 1
    assert rank_uncertain_slices(u, [10], prediction=pred)[0][0] == 11
    ranked = rank_uncertain_slices(u, [10], prediction=pred, coverage=1.0)
    assert ranked[0][0] == 2  # the farthest structure slice (8 away) at equal uncertainty
    first = [i for i, _ in ranked[:4]]
    assert 11 not in first and 12 not in first
    # still uncertainty-led among equally far slices, and empty slices stay last
    u[17] = 0.95
    assert rank_uncertain_slices(u, [10], prediction=pred, coverage=1.0)[0][0] == 17
    assert {i for i, _ in ranked[-4:]} == {0, 1, 18, 19}
    # nothing painted yet: coverage changes nothing
    assert (rank_uncertain_slices(u, [], prediction=pred, coverage=1.0)
            == rank_uncertain_slices(u, [], prediction=pred))


def test_specks_away_from_the_main_structure_are_not_suggested():
    # the body spans 4..11, painted at 8; a young model adds a very unsure speck on slice 18
    u = np.full((20, 16, 16), 0.3)
    pred = np.zeros((20, 16, 16), np.uint8)
    pred[4:12, 4:10, 4:10] = 1
    pred[18, 1, 1] = 1
    u[18] = 0.9
    assert rank_uncertain_slices(u, [8], prediction=pred, coverage=1.0)[0][0] == 18
    ranked = rank_uncertain_slices(u, [8], prediction=pred, coverage=1.0, main_structure=True)
    assert ranked[0][0] == 4  # the body's farthest slice from the painted one
    assert 18 not in [i for i, _ in ranked[:7]]  # with the empty slices, after the body
    # a second piece that reaches a painted slice is the user's structure too
    pred[15:17, 12:14, 12:14] = 2
    mask = main_structure_mask(pred, np.isin(np.arange(20), [8, 16]))
    assert mask[15:17, 12:14, 12:14].all() and mask[4:12, 4:10, 4:10].all()
    assert not mask[18].any()
    # along another axis, the labelled flags follow that axis
    along_x = np.moveaxis(pred, 0, 2)
    assert not main_structure_mask(along_x, np.isin(np.arange(20), [8]), axis=2)[..., 18].any()


def test_a_fresh_scan_can_start_at_the_structures_body():
    # a learnt model on a new scan: specks at the ends are its most uncertain slices
    u = np.full((20, 16, 16), 0.2)
    pred = np.zeros((20, 16, 16), np.uint8)
    pred[6:14, 4:12, 4:12] = 1
    pred[9, 2:14, 2:14] = 1  # the largest section
    pred[[0, 19], 0, 0] = 1
    u[[0, 19]] = 0.9
    assert rank_uncertain_slices(u, [], prediction=pred)[0][0] == 0
    ranked = rank_uncertain_slices(u, [], prediction=pred, start_at_body=True)
    assert ranked[0][0] == 9 and ranked[1][0] == 0 and len(ranked) == 20
    # once a slice is painted, the ranking is the usual one
    assert (rank_uncertain_slices(u, [9], prediction=pred, start_at_body=True)
            == rank_uncertain_slices(u, [9], prediction=pred))
    # nothing predicted: nothing to start at
    empty = np.zeros_like(pred)
    assert (rank_uncertain_slices(u, [], prediction=empty, start_at_body=True)
            == rank_uncertain_slices(u, [], prediction=empty))


def test_a_fused_prediction_keeps_its_main_piece_and_what_the_user_painted():
    pred = np.zeros((12, 10, 10), np.uint8)
    pred[2:8, 2:6, 2:6] = 1  # the body
    pred[10, 8, 8] = 1  # a speck far from it
    pred[9, 0:2, 0:2] = 2  # a small piece the user painted on slice 9
    labels = np.full(pred.shape, IGNORE_INDEX, np.uint8)
    labels[9] = pred[9]
    kept = keep_main_structure(pred, labels)
    assert kept.dtype == pred.dtype
    assert (kept[2:8] == pred[2:8]).all() and (kept[9] == pred[9]).all()
    assert kept[10, 8, 8] == 0
    # nothing painted: the largest piece alone
    assert not keep_main_structure(pred, np.full(pred.shape, IGNORE_INDEX, np.uint8))[9].any()


def test_summed_uncertainty_ranks_a_large_unsure_section_over_a_speck():
    u = np.full((6, 20, 20), 0.1)
    pred = np.zeros((6, 20, 20), np.uint8)
    pred[2, 2:16, 2:16] = 1  # a large cross-section, a little unsure around it
    u[2] = 0.4
    pred[5, 0, 0] = 1  # a speck of false structure, very unsure
    u[5, :4, :4] = 0.9
    assert rank_uncertain_slices(u, [], prediction=pred)[0][0] == 5
    assert rank_uncertain_slices(u, [], prediction=pred, per_slice="sum")[0][0] == 2
    by_area = rank_uncertain_slices(u, [], prediction=pred, per_slice="area")
    assert by_area[0] == (2, pytest.approx(0.4)) and by_area[1][0] == 5
    assert 0 < by_area[1][1] < 0.9 / 196  # a 1-voxel speck weighs 1/196 of the 14x14 section
    with pytest.raises(ValueError, match="per_slice"):
        rank_uncertain_slices(u, [], prediction=pred, per_slice="max")


def test_spreading_fills_the_longest_gap_between_painted_ends_first_then_goes_by_uncertainty():
    u = np.full((41, 12, 12), 0.02)
    pred = np.zeros((41, 12, 12), np.uint8)
    pred[:, 3:9, 3:9] = 1
    u[19:22] = 0.9  # the model doubts the slices next to the painted middle most
    ends = [0, 20, 40]  # the structure's first, middle and last slices

    assert rank_uncertain_slices(u, ends, prediction=pred, coverage=1)[0][0] in (19, 21)
    spread = rank_uncertain_slices(u, ends, prediction=pred, coverage=1, spread_until=5)
    assert [z for z, _ in spread[:2]] == [10, 30]  # the quarters: two runs of 19 slices
    # the runs' order: the longer first; equal runs by the score at their middle
    u[30] = 0.95
    assert rank_uncertain_slices(u, ends, prediction=pred, spread_until=5)[0][0] == 30
    assert rank_uncertain_slices(u, [0, 20, 34], prediction=pred, spread_until=5)[0][0] == 10
    # until spread_until slices are painted; with fewer than two, no run is known
    five = [0, 10, 20, 30, 40]
    assert rank_uncertain_slices(u, five, prediction=pred, spread_until=5)[0][0] in (19, 21)
    assert rank_uncertain_slices(u, five, prediction=pred, spread_until=99)[0][0] == 5
    assert (rank_uncertain_slices(u, [20], prediction=pred, spread_until=5)
            == rank_uncertain_slices(u, [20], prediction=pred))
    # the rest keeps its order behind the middles
    tail = [z for z, _ in spread[2:]]
    plain = [z for z, _ in rank_uncertain_slices(u, ends, prediction=pred, coverage=1)]
    assert tail == [z for z in plain if z not in (10, 30)]


def test_sparse_labels_keep_only_labelled_slices():
    lab = np.random.default_rng(0).integers(0, 3, (4, 6, 5)).astype(np.uint8)
    sp = sparse_labels(lab, [1, 3])
    assert np.array_equal(sp[[1, 3]], lab[[1, 3]])
    assert (sp[[0, 2]] == IGNORE_INDEX).all()
    sp_x = sparse_labels(lab, [2], axis=2)
    assert np.array_equal(sp_x[:, :, 2], lab[:, :, 2])
    assert (np.delete(sp_x, 2, axis=2) == IGNORE_INDEX).all()
    assert annotated_slices(sp) == [1, 3]
    assert annotated_slices(sp_x, axis=2) == [2]


def test_split_held_back_rules():
    assert split_held_back([4]) == ([4], [])
    train, held = split_held_back([3, 1])
    assert len(held) == 1 and len(train) == 1 and set(train) | set(held) == {1, 3}
    train, held = split_held_back(list(range(8)), fraction=0.25, seed=3)
    assert len(held) == 2 and not set(train) & set(held)
    assert split_held_back(list(range(8)), 0.25, seed=3) == (train, held)  # reproducible
    pairs = [(0, 2), (0, 5), (1, 7)]
    train, held = split_held_back(pairs, 0.9)
    assert len(train) == 1 and len(held) == 2  # always keeps one slice to learn from


def test_choose_slices_strategies():
    u = np.zeros((10, 2, 2))
    u[[7, 2, 5]] = [[[3.0]], [[2.0]], [[1.0]]]
    assert choose_slices("uncertainty", 2, 10, u) == [7, 2]
    assert choose_slices("uncertainty", 2, 10, u, exclude=[7]) == [2, 5]
    assert even_slices(10, 3) == [1, 5, 8]
    r = choose_slices("random", 3, 10, seed=1)
    assert len(set(r)) == 3 and r == choose_slices("random", 3, 10, seed=1)
    with pytest.raises(ValueError):
        choose_slices("nearest", 1, 10)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_finetune_writes_a_new_checkpoint_and_leaves_the_old_one(tiny_model, tmp_path):
    image, truth = synthetic_case((6, 32, 32), seed=1)
    before = _digest(tiny_model)
    events = []
    out = finetune(tiny_model, image, sparse_labels(truth, [1, 4]), [image[:2]],
                   method="mean_teacher", steps=3, out_path=tmp_path / "ft.pt", device="cpu",
                   on_event=events.append, labeled_bs=2, unlabeled_bs=2)
    assert out == str(tmp_path / "ft.pt")
    assert _digest(tiny_model) == before
    _, meta = load_checkpoint(out)
    assert meta["init_checkpoint"] == str(tiny_model) and meta["steps_done"] == 3
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3]
    assert events[-1]["type"] == "done"


def test_finetune_refuses_empty_annotation_and_can_be_stopped(tiny_model, tmp_path):
    image, truth = synthetic_case((4, 32, 32))
    with pytest.raises(NoLabelledSlicesError):
        finetune(tiny_model, image, np.full_like(truth, IGNORE_INDEX), steps=2)
    out = finetune(tiny_model, image, sparse_labels(truth, [0]), steps=5, device="cpu",
                   out_path=tmp_path / "never.pt", should_stop=lambda: True)
    assert out is None and not (tmp_path / "never.pt").exists()


def test_finetune_also_learns_from_other_scans_labelled_slices(tiny_model, tmp_path):
    from test_training_synth import blob_volume

    image, truth = blob_volume(0)
    mine = sparse_labels(np.where(truth == 2, 0, truth).astype(np.uint8), [2])
    other = sparse_labels(truth, [3])  # a class this scan's painted slice does not show
    assert (mine[mine != IGNORE_INDEX] < 2).all() and (other == 2).any()
    out = finetune(tiny_model, image, mine, steps=2, out_path=tmp_path / "ft.pt",
                   labeled_bs=2, unlabeled_bs=0, other_labelled=[(image, other)])
    net, meta = load_checkpoint(out)
    assert meta["num_classes"] == 3
    assert meta["data"]["labeled_volumes"] == 2


def test_a_prediction_can_be_kept_within_the_outermost_painted_slices():
    from training.interactive.loop import within_painted_extent

    pred = np.zeros((8, 6, 6), np.uint8)
    pred[1:7, 2:4, 2:4] = 1  # the network sees the structure on slices 1-6
    labels = np.full(pred.shape, 255, np.uint8)
    labels[2] = 0
    labels[2, 2:4, 2:4] = 1  # the user's first slice of the structure
    labels[5] = 0
    labels[5, 2:4, 2:4] = 1  # and the last
    labels[7] = 0  # an empty slice painted beyond it changes nothing
    out = within_painted_extent(pred, labels)
    assert out[2:6].any(axis=(1, 2)).all() and not out[[0, 1, 6, 7]].any()
    np.testing.assert_array_equal(out[2:6], pred[2:6])
    along_x = within_painted_extent(pred.transpose(2, 1, 0), labels.transpose(2, 1, 0), axis=2)
    np.testing.assert_array_equal(along_x, out.transpose(2, 1, 0))
    nothing = np.full(pred.shape, 255, np.uint8)  # no slice shows a structure: unchanged
    np.testing.assert_array_equal(within_painted_extent(pred, nothing), pred)


def test_slice_agreement_is_the_dice_between_what_was_shown_and_painted():
    from training.interactive.loop import slice_agreement

    painted = np.zeros((8, 8), np.uint8)
    painted[2:6, 2:6] = 1
    assert slice_agreement(painted, painted) == 1.0
    half = painted.copy()
    half[2:4] = 0  # the model showed half of it
    assert slice_agreement(half, painted) == pytest.approx(2 * 8 / (8 + 16))
    empty = np.zeros_like(painted)
    assert slice_agreement(empty, empty) == 1.0  # nothing shown, nothing there: right
    nothing = np.full_like(painted, 255)  # a new model's "not annotated" shows nothing
    assert slice_agreement(nothing, painted) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        slice_agreement(painted[:4], painted)


def test_ranking_within_the_painted_ends_leaves_out_the_slices_beyond():
    from training.interactive.loop import rank_uncertain_slices

    unc = np.full((10, 8, 8), 0.1, np.float32)
    unc[[0, 9]] = 0.9  # most unsure beyond the ends
    ranked = rank_uncertain_slices(unc, [2, 7], 0, within=(2, 7))
    assert sorted(i for i, _ in ranked) == [3, 4, 5, 6]
    assert {0, 9} <= {i for i, _ in rank_uncertain_slices(unc, [2, 7], 0)}

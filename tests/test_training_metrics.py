import numpy as np
import pytest

from training import IGNORE_INDEX
from training.engine.metrics import dice, dice_hd95, mean_dice, mean_over_cases


def _square(shape=(1, 20, 20), y=5, x=5, s=6, value=1):
    a = np.zeros(shape, np.uint8)
    a[:, y : y + s, x : x + s] = value
    return a


def test_perfect_prediction():
    ref = _square()
    r = dice_hd95(ref, ref, 2)
    assert r["dice"] == [1.0] and r["hd95"] == [0.0]


def test_shift_gives_known_dice_and_hd95():
    ref = _square()
    pred = _square(x=7)  # shifted 2 voxels along x: overlap 6x4 of 6x6
    r = dice_hd95(pred, ref, 2)
    assert r["dice"][0] == pytest.approx(2 * 24 / 72)
    assert r["hd95"][0] == pytest.approx(2.0)
    r2 = dice_hd95(pred, ref, 2, spacing=(1.0, 1.0, 0.5))  # x spacing halves the distance
    assert r2["hd95"][0] == pytest.approx(1.0)


def test_empty_class_rules():
    """Absent from both: not scored (NaN), neither 1 nor 0; present in one only: Dice 0."""
    ref = _square()
    both_empty = dice_hd95(ref, ref, 3)
    assert np.isnan(both_empty["dice"][1]) and np.isnan(both_empty["hd95"][1])
    missed = dice_hd95(np.zeros_like(ref), ref, 2)
    assert missed["dice"] == [0.0] and missed["hd95"][0] == pytest.approx(np.sqrt(1 + 400 + 400))
    invented = dice_hd95(ref, np.zeros_like(ref), 2)  # found only in the prediction
    assert invented["dice"] == [0.0]
    apart = dice_hd95(_square(x=0, s=3), _square(x=12, s=3), 2)  # both there, no overlap
    assert apart["dice"] == [0.0] and 0 < apart["hd95"][0] < np.sqrt(801)


def test_one_dice_rule_for_masks_and_label_maps():
    assert np.isnan(dice(np.zeros((3, 3)), np.zeros((3, 3))))
    assert dice(np.ones((3, 3)), np.zeros((3, 3))) == 0.0
    ref = np.zeros((2, 4, 4), np.uint8)
    ref[0, :2] = 1
    pred = ref.copy()
    assert mean_dice(pred, ref) == 1.0
    pred[0, 0] = 0  # half the structure lost
    assert mean_dice(pred, ref) == pytest.approx(2 * 4 / (4 + 8))
    pred[1, 3, 3] = 2  # a class found only in the prediction scores 0 and counts
    assert mean_dice(pred, ref) == pytest.approx((2 * 4 / (4 + 8) + 0.0) / 2)
    ignore = ref.copy()
    ignore[0, 0] = IGNORE_INDEX  # unannotated voxels never count
    assert mean_dice(ref * (ref != 0), ignore) == 1.0
    assert np.isnan(mean_dice(np.zeros((3, 3)), np.zeros((3, 3))))  # nothing to score
    assert np.isnan(mean_dice(np.zeros((3, 3)), np.full((3, 3), IGNORE_INDEX)))
    # the same numbers as the per-class table
    table = dice_hd95(pred, ref, 3)["dice"]
    assert np.nanmean(table) == pytest.approx(mean_dice(pred, ref))


def test_unannotated_reference_voxels_are_ignored():
    ref = _square()
    ref[:, :, 15:] = IGNORE_INDEX
    pred = _square()
    pred[:, :, 15:] = 1  # spurious foreground only where the reference is not annotated
    assert dice_hd95(pred, ref, 2)["dice"] == [1.0]


def test_mean_over_cases():
    m = mean_over_cases([{"dice": [1.0, 0.0], "hd95": [0.0, 2.0]},
                         {"dice": [0.5, 1.0], "hd95": [2.0, 0.0]}])
    assert m == {"dice": [0.75, 0.5], "hd95": [1.0, 1.0]}
    m = mean_over_cases([{"dice": [1.0, np.nan], "hd95": [0.0, np.nan]},
                         {"dice": [0.5, np.nan], "hd95": [2.0, np.nan]}])
    assert m["dice"][0] == 0.75 and np.isnan(m["dice"][1])  # scored in no case: not scored

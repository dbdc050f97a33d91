import numpy as np
import pytest

from training import IGNORE_INDEX
from training.metrics import dice_hd95, mean_over_cases


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
    ref = _square()
    both_empty = dice_hd95(ref, ref, 3)
    assert both_empty["dice"][1] == 1.0 and both_empty["hd95"][1] == 0.0
    missed = dice_hd95(np.zeros_like(ref), ref, 2)
    assert missed["dice"] == [0.0] and missed["hd95"][0] == pytest.approx(np.sqrt(1 + 400 + 400))


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

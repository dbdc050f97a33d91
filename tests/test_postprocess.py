"""A shipped model's clean-up: each structure's main 3-D piece, as its card names."""

import numpy as np
import pytest
import torch

from training.engine.inference import predict_volume
from training.engine.postprocess import drop_small_pieces, keep_main_pieces, model_clean_up


def _heart_with_specks() -> np.ndarray:
    """Two touching structures over 6 slices, plus a stray speck of each far away."""
    lab = np.zeros((10, 40, 40), np.uint8)
    lab[2:8, 10:20, 10:20] = 1
    lab[2:8, 20:26, 10:20] = 2
    lab[9, 35:37, 35:37] = 1  # a speck of class 1 on an end slice
    lab[0, 2:4, 2:4] = 2  # and one of class 2
    lab[5, 30:33, 5:8] = 2  # class 2 again, apart from its body
    return lab


def test_each_class_keeps_its_largest_piece_and_nothing_else_changes():
    lab = _heart_with_specks()
    out = keep_main_pieces(lab, "per_class")
    expected = np.zeros_like(lab)
    expected[2:8, 10:20, 10:20] = 1
    expected[2:8, 20:26, 10:20] = 2
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == lab.dtype


def test_foreground_mode_keeps_the_largest_piece_of_all_structures_together():
    lab = _heart_with_specks()
    out = keep_main_pieces(lab, "foreground")
    assert (out[9] == 0).all() and (out[0] == 0).all()
    assert (out[5, 30:33, 5:8] == 0).all()
    assert (out[2:8, 10:26, 10:20] == lab[2:8, 10:26, 10:20]).all()  # the body, both classes


def test_none_and_empty_volumes_are_left_alone_and_unknown_modes_refused():
    lab = _heart_with_specks()
    np.testing.assert_array_equal(keep_main_pieces(lab, "none"), lab)
    empty = np.zeros((3, 8, 8), np.uint8)
    np.testing.assert_array_equal(keep_main_pieces(empty, "per_class"), empty)
    with pytest.raises(ValueError, match="unknown clean-up"):
        keep_main_pieces(lab, "largest")
    assert model_clean_up({}) == "none"
    with pytest.raises(ValueError, match="unknown clean-up"):
        model_clean_up({"postprocess": "biggest"})


def test_small_pieces_go_and_pieces_of_like_size_stay():
    lab = np.zeros((12, 40, 40), np.uint8)
    lab[1:6, 5:15, 5:15] = 1  # 500 voxels
    lab[7:11, 25:35, 25:35] = 1  # 400: a second focus, apart from the first
    lab[0, 35:38, 2:5] = 1  # 9: a speck
    lab[11, 2:8, 30:35] = 1  # 30: 6 % of the largest
    out = drop_small_pieces(lab, 0.1)
    expected = lab.copy()
    expected[0], expected[11] = 0, 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == lab.dtype
    assert (drop_small_pieces(lab, 0.05) == 1).sum() == 930  # the 30-voxel piece stays
    assert (drop_small_pieces(lab, 0.9) == 1).sum() == 500  # only the largest is left
    np.testing.assert_array_equal(drop_small_pieces(lab, 0.0), lab)
    empty = np.zeros((3, 8, 8), np.uint8)
    np.testing.assert_array_equal(drop_small_pieces(empty, 0.1), empty)
    with pytest.raises(ValueError, match="fraction"):
        drop_small_pieces(lab, 1.5)
    # the card's name for it drops what is under SMALL_PIECE_SHARE (25 %) of the largest piece
    np.testing.assert_array_equal(keep_main_pieces(lab, "small_pieces"), expected)
    assert model_clean_up({"postprocess": "small_pieces"}) == "small_pieces"


class _Brightness(torch.nn.Module):
    """Logits (-x, x, 0): bright voxels are structure 1, whatever piece they are in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-1.0, 1.0, 0.0]).view(3, 1, 1, 1) * 4)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.conv(x)}


def test_predict_cleans_labels_as_the_model_names_and_leaves_uncertainty_alone():
    img = np.zeros((6, 16, 16), np.float32)
    img[1:5, 4:10, 4:10] = 10.0  # the structure
    img[0, 13:15, 13:15] = 10.0  # a bright speck on an end slice, apart from it
    meta = {"dims": 2, "size": [16, 16], "normalization": None, "num_classes": 3,
            "postprocess": "per_class"}
    net = _Brightness()
    for probabilities in (True, False):
        raw = predict_volume(net, meta, img, device="cpu", probabilities=probabilities,
                             clean_up=False)
        clean = predict_volume(net, meta, img, device="cpu", probabilities=probabilities)
        assert raw["labels"][0, 13:15, 13:15].all()  # the network sees the speck
        assert (clean["labels"] == 1).sum() == 4 * 36 and not clean["labels"][0].any()
        np.testing.assert_allclose(clean["uncertainty"], raw["uncertainty"])
    unnamed = {k: v for k, v in meta.items() if k != "postprocess"}  # a New model: no clean-up
    np.testing.assert_array_equal(predict_volume(net, unnamed, img, device="cpu")["labels"],
                                  raw["labels"])

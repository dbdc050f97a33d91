"""The recipe's 2-D sampling and augmentation (training.engine.patches, training.engine.augment)."""

import numpy as np
import pytest
import torch

from training import IGNORE_INDEX
from training.engine.augment import Augmentation, intensity, patch_grid, sample_patches
from training.engine.data import DataError, TrainData
from training.engine.patches import SliceSampler

# Only spatial changes, always: checks of where pixels land must not see intensity changes.
SPATIAL_ONLY = Augmentation(p_spatial=1.0, p_gamma=0.0, p_contrast=0.0, p_brightness=0.0,
                            p_noise=0.0)


def _coordinate_data(shape=(3, 40, 64)) -> TrainData:
    """Slices whose grey value names the pixel: 1 + 1000 * y + x (0 is the padding)."""
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    image = (1 + 1000 * y + x).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[:, 30:34, 2:6] = 1  # a small structure near a corner
    return TrainData(images=[image], labels=[labels], num_classes=2,
                     class_names=["background", "structure"])


def test_patches_are_native_pixels_of_the_slice_or_padding():
    data = _coordinate_data()
    s = SliceSampler(data, (32, 48), labeled_bs=64, unlabeled_bs=0, seed=1, augmentation=None)
    batch, _ = s.next()
    img, lab = batch["image"][:, 0].numpy().round(), batch["label"].numpy()
    assert img.shape == (64, 32, 48) and lab.shape == (64, 32, 48)
    for patch, labels in zip(img, lab, strict=True):
        inside = patch > 0
        assert inside.any()
        ys, xs = (patch[inside] - 1) // 1000, (patch[inside] - 1) % 1000
        rows, cols = np.nonzero(inside)
        # one shift for the whole patch: a contiguous crop at the native pixel size (no
        # squashing, the aspect ratio kept)
        assert len(set((ys - rows).tolist())) == 1 and len(set((xs - cols).tolist())) == 1
        assert ys.min() >= 0 and ys.max() < 40 and xs.min() >= 0 and xs.max() < 64
        assert (labels[~inside] == IGNORE_INDEX).all()  # padding is not annotated
        assert (labels[inside] != IGNORE_INDEX).all()


def test_a_slice_smaller_than_the_patch_is_padded_not_stretched():
    data = _coordinate_data((2, 20, 24))
    s = SliceSampler(data, (32, 32), labeled_bs=8, unlabeled_bs=0, seed=0, augmentation=None)
    img = s.next()[0]["image"][:, 0].numpy().round()
    for patch in img:
        assert int((patch > 0).sum()) == 20 * 24  # every pixel of the slice once


def test_the_foreground_share_holds():
    data = _coordinate_data()

    def share_with_structure(fg: float) -> float:
        s = SliceSampler(data, (16, 16), labeled_bs=3000, unlabeled_bs=0, seed=2,
                         augmentation=None, foreground_share=fg)
        lab = s.next()[0]["label"]
        return float((lab == 1).flatten(1).any(1).float().mean())

    chance = share_with_structure(0.0)
    forced = share_with_structure(1 / 3)
    # a third forced onto the structure, plus what chance brings to the other two thirds
    assert forced == pytest.approx(1 / 3 + 2 / 3 * chance, abs=0.04)
    assert forced > chance + 0.2


def test_augmentation_keeps_labels_aligned_with_the_image():
    labels = np.zeros((4, 48, 48), np.uint8)
    labels[:, 10:20, 8:30] = 1
    labels[:, 28:40, 20:44] = 2
    data = TrainData(images=[labels.astype(np.float32)], labels=[labels], num_classes=3)
    s = SliceSampler(data, (40, 40), labeled_bs=32, unlabeled_bs=0, seed=5,
                     augmentation=SPATIAL_ONLY)
    batch, _ = s.next()
    img, lab = batch["image"][:, 0], batch["label"]
    known = lab != IGNORE_INDEX
    agree = (img.round().long() == lab)[known].float().mean()
    assert agree > 0.97  # only boundary pixels may differ (bilinear vs nearest)
    assert (lab == IGNORE_INDEX).any()  # some turns brought in the outside, marked unknown


def test_turns_and_flips_are_off_by_default():
    assert not Augmentation.named("anatomy").flips
    assert Augmentation.named("any-orientation").flips
    labels = np.zeros((2, 48, 48), np.uint8)
    labels[:, 16:32, 6:18] = 1  # "RV" left
    labels[:, 16:32, 30:42] = 2  # "LV" right
    data = TrainData(images=[labels.astype(np.float32)], labels=[labels], num_classes=3)

    def left_of(aug: Augmentation) -> np.ndarray:
        s = SliceSampler(data, (48, 48), labeled_bs=200, unlabeled_bs=0, seed=3,
                         augmentation=aug, foreground_share=0.0)
        lab = s.next()[0]["label"].numpy()
        xs = np.arange(48)[None, None, :]
        c1 = ((lab == 1) * xs).sum((1, 2)) / np.maximum((lab == 1).sum((1, 2)), 1)
        c2 = ((lab == 2) * xs).sum((1, 2)) / np.maximum((lab == 2).sum((1, 2)), 1)
        return c1 < c2

    assert left_of(Augmentation.named("anatomy")).all()  # the cue survives every sample
    assert not left_of(Augmentation.named("any-orientation")).all()


def test_patch_grid_without_augmentation_is_the_identity():
    x = torch.arange(6 * 8, dtype=torch.float32).reshape(1, 1, 6, 8)
    grid = patch_grid(torch.tensor([[2.5, 3.5]]), (6, 8), (6, 8), None, torch.Generator())
    out, _ = sample_patches(x, None, grid)
    assert torch.allclose(out, x, atol=1e-4)


def test_intensity_changes_keep_shape_and_stay_finite():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 12, 12)
    aug = Augmentation(p_gamma=1, p_contrast=1, p_brightness=1, p_noise=1)
    y = intensity(x, aug, gen)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(x, y)
    assert torch.equal(intensity(x, None, gen), x)


def test_bad_patch_sizes_are_refused():
    data = _coordinate_data()
    for size in ((7, 7), (0, 0), (-32, 32), (32,)):
        with pytest.raises(DataError, match="patch"):
            SliceSampler(data, size)


def test_the_patch_shrinks_to_the_largest_slice_the_network_can_take():
    from training.engine.patches import fitted_patch

    data = _coordinate_data((2, 40, 64))
    assert fitted_patch((160, 160), data, divisor=16) == [48, 64]  # 40 rounded up to 48
    assert fitted_patch((32, 32), data, divisor=16) == [32, 32]  # already smaller


def test_a_small_scan_trains_and_predicts_in_a_fitted_patch(tmp_path):
    from training.engine.checkpoint import load_checkpoint
    from training.fit.trainer import TrainConfig, train

    data = _coordinate_data((3, 20, 30))
    cfg = TrainConfig(steps=2, size=[128, 128], labeled_bs=2, unlabeled_bs=0, base=4, depth=2,
                      device="cpu", checkpoint=str(tmp_path / "m.pt"))
    _, meta = load_checkpoint(train(cfg, data))
    assert meta["size"] == [20, 32]  # predict's window is the patch it trained on


def test_mirror_left_right_mirrors_half_the_samples_and_keeps_up_up():
    aug = Augmentation.named("mirror-left-right")
    assert aug.mirror_x and not aug.flips and not Augmentation.named("anatomy").mirror_x
    labels = np.zeros((1, 48, 48), np.uint8)
    labels[:, 4:14, 6:18] = 1  # top left
    labels[:, 4:14, 30:42] = 2  # top right
    data = TrainData(images=[labels.astype(np.float32)], labels=[labels], num_classes=3)
    s = SliceSampler(data, (48, 48), labeled_bs=200, unlabeled_bs=0, seed=3,
                     augmentation=aug, foreground_share=0.0)
    lab = s.next()[0]["label"].numpy()
    xs, ys = np.arange(48)[None, None, :], np.arange(48)[None, :, None]

    def centre(c: int, axis: np.ndarray) -> np.ndarray:
        return ((lab == c) * axis).sum((1, 2)) / np.maximum((lab == c).sum((1, 2)), 1)

    mirrored = centre(1, xs) > centre(2, xs)
    assert 0.3 < mirrored.mean() < 0.7  # about half swap sides
    assert (centre(1, ys) < 24).all() and (centre(2, ys) < 24).all()  # none turned upside down

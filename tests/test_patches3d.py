"""3-D patches on the recipe: crops on the voxel grid, foreground centring, aligned augmentation."""

import numpy as np
import pytest
import torch

from training import IGNORE_INDEX
from training.engine.augment import Augmentation
from training.engine.data import DataError, TrainData
from training.engine.patches3d import VolumePatchSampler


def _ball_volume(shape=(20, 40, 48), centre=(10, 18, 30), radius=6):
    zz, yy, xx = np.indices(shape)
    ball = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius ** 2
    lab = ball.astype(np.uint8)
    img = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32) + 4 * ball
    return img, lab


def test_an_unaugmented_patch_is_the_volumes_own_voxels():
    img, lab = _ball_volume()
    s = VolumePatchSampler(TrainData.from_arrays([img], [lab]), (8, 16, 16), labeled_bs=6,
                           unlabeled_bs=0, seed=1, foreground_share=0.0)
    data_img = s.images[0].numpy()  # normalised as training sees it
    batch, unl = s.next()
    assert unl is None and batch["image"].shape == (6, 1, 8, 16, 16)
    for patch, plab in zip(batch["image"][:, 0].numpy(), batch["label"].numpy(), strict=True):
        # the patch must be found in the volume at whole-voxel offsets, labels with it
        hits = [(z, y, x) for z in range(20 - 7) for y in range(40 - 15) for x in range(48 - 15)
                if np.allclose(data_img[z, y, x], patch[0, 0, 0])]
        assert any(np.allclose(data_img[z:z + 8, y:y + 16, x:x + 16], patch, atol=1e-5)
                   and np.array_equal(lab[z:z + 8, y:y + 16, x:x + 16], plab)
                   for z, y, x in hits)


def test_foreground_share_centres_patches_on_the_structure():
    img, lab = _ball_volume(radius=3)  # 123 of 38,400 voxels: random patches rarely hit it
    data = TrainData.from_arrays([img], [lab])
    always = VolumePatchSampler(data, (6, 8, 8), labeled_bs=40, unlabeled_bs=0, seed=0,
                                foreground_share=1.0).next()[0]["label"]
    assert bool((always == 1).flatten(1).any(1).all())
    # the structure voxel is at the patch centre (here the patch fits around it)
    assert bool((always[:, 2:4, 3:5, 3:5] == 1).flatten(1).any(1).all())
    never = VolumePatchSampler(data, (6, 8, 8), labeled_bs=40, unlabeled_bs=0, seed=0,
                               foreground_share=0.0).next()[0]["label"]
    assert float((never == 1).flatten(1).any(1).float().mean()) < 0.5


def test_augmented_labels_stay_on_their_image():
    # an image that is its own label map: after turns and scaling each label must still sit
    # on the voxels whose intensity says that label
    img, lab = _ball_volume(radius=8)
    img = 10.0 * lab.astype(np.float32)
    aug = Augmentation(p_spatial=1.0, rotate=30.0, scale=(0.8, 1.25), p_gamma=0, p_contrast=0,
                       p_brightness=0, p_noise=0)
    data = TrainData.from_arrays([img], [lab])
    s = VolumePatchSampler(data, (12, 24, 24), labeled_bs=12, unlabeled_bs=0, seed=3,
                           augmentation=aug, foreground_share=1.0)
    mid = float((s.images[0].max() + s.images[0].min()) / 2)  # images are normalised
    batch = s.next()[0]
    known = batch["label"] != IGNORE_INDEX
    inside = (batch["image"][:, 0] > mid)
    agree = (inside == (batch["label"] == 1))[known].float().mean()
    assert float(agree) > 0.97  # only the bilinear rim of the ball may differ
    # the turns are real: unaugmented patches would be axis-aligned copies
    assert not torch.equal(batch["image"], VolumePatchSampler(
        data, (12, 24, 24), labeled_bs=12, unlabeled_bs=0, seed=3,
        foreground_share=1.0).next()[0]["image"])


def test_a_volume_smaller_than_the_patch_is_padded_as_not_annotated():
    img, lab = _ball_volume(shape=(6, 20, 20), centre=(3, 10, 10), radius=3)
    s = VolumePatchSampler(TrainData.from_arrays([img], [lab]), (8, 24, 24), labeled_bs=2,
                           unlabeled_bs=0, seed=0)
    label = s.next()[0]["label"]
    assert label.shape == (2, 8, 24, 24)
    assert bool((label[:, 0] == IGNORE_INDEX).all()) and bool((label[:, :, :, 0] == 255).all())
    assert int((label == 1).sum()) == 2 * int(lab.sum())  # all of the structure, centred


def test_sparse_volumes_feed_both_pools_and_bad_patches_are_refused():
    img, lab = _ball_volume()
    lab = lab.copy()
    lab[12:] = IGNORE_INDEX
    data = TrainData.from_arrays([img], [lab])
    s = VolumePatchSampler(data, (4, 16, 16), labeled_bs=3, unlabeled_bs=2, seed=0,
                           foreground_share=0.0)
    batch, unl = s.next()
    assert batch["image"].shape == (3, 1, 4, 16, 16)
    assert bool((batch["label"] != IGNORE_INDEX).flatten(1).any(1).all())
    assert unl is not None and unl["image"].shape == (2, 1, 4, 16, 16)
    with pytest.raises(DataError, match="three sizes"):
        VolumePatchSampler(data, (16, 16), seed=0)


def test_a_3d_model_says_its_recipe(tmp_path):
    from training.engine.checkpoint import read_checkpoint
    from training.fit.trainer import TrainConfig, train
    from training.library.model_card import recipe_summary

    img, lab = _ball_volume()
    cfg = TrainConfig(method="supervised", dims=3, steps=2, size=[8, 16, 16], labeled_bs=2,
                      unlabeled_bs=0, base=4, depth=2, device="cpu",
                      checkpoint=str(tmp_path / "m.pt"))
    meta = read_checkpoint(train(cfg, TrainData.from_arrays([img], [lab])))["meta"]
    assert meta["sampling"] == "patch3d"
    line = recipe_summary(meta)
    assert line.startswith("3-D patches 8x16x16 of the voxel grid (33 % centred")
    assert "turns about z up to 15 degrees" in line and "Gaussian sliding-window" in line
    # a 3-D model of the earlier sampling keeps its short line
    assert recipe_summary({**meta, "sampling": "patch"}).startswith("3-D patches [8, 16, 16];")


def test_mirror_left_right_flips_only_x_in_3d():
    from training.engine.patches3d import patch_grid_3d

    aug = Augmentation(p_spatial=0.0, mirror_x=True)  # no turn or scale: only the mirror
    plain = patch_grid_3d((5, 8, 8), (10, 16, 16), (4, 6, 6), None, torch.Generator())
    gen = torch.Generator().manual_seed(0)
    mirrored = 0
    for _ in range(40):
        g = patch_grid_3d((5, 8, 8), (10, 16, 16), (4, 6, 6), aug, gen)
        assert torch.allclose(g[..., 1:], plain[..., 1:])  # y and z as they are
        if not torch.allclose(g[..., 0], plain[..., 0]):
            assert torch.allclose(g[..., 0], plain[..., 0].flip(-1), atol=1e-6)
            mirrored += 1
    assert 8 < mirrored < 32

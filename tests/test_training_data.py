import warnings

import numpy as np
import pytest
import torch
from test_training_synth import blob_volume, write_dataset

from training import IGNORE_INDEX
from training.engine.data import (
    DataError,
    ResizedSliceSampler,
    TrainData,
    load_train_data,
    scan_dataset,
    select_labeled,
)
from training.engine.normalization import normalize_intensity
from training.engine.patches import SliceSampler


def test_scan_dataset_reads_index_splits_and_patients(tmp_path):
    write_dataset(tmp_path, n=5)
    cases = scan_dataset(tmp_path)
    assert [c.split for c in cases] == ["train"] * 4 + ["test"]
    lab, unl = select_labeled(cases, 1)  # first patient = its two cases
    assert [c.name for c in lab] == ["case00", "case01"]
    assert [c.name for c in unl] == ["case02", "case03"]  # test case never used for training
    lab, _ = select_labeled(cases, "case03")
    assert [c.name for c in lab] == ["case03"]


def test_scan_dataset_without_index_matches_by_name(tmp_path):
    write_dataset(tmp_path, n=2, with_index=False)
    cases = scan_dataset(tmp_path)
    assert [(c.name, c.label.name) for c in cases] == [
        ("case00", "case00.nii.gz"), ("case01", "case01.nii.gz")]


def test_missing_label_file_is_reported(tmp_path):
    write_dataset(tmp_path, n=2)
    (tmp_path / "labels" / "case00.nii.gz").unlink()
    with pytest.raises(DataError, match="label file missing"):
        scan_dataset(tmp_path)


def test_empty_and_unknown_labelled_sets(tmp_path):
    write_dataset(tmp_path, n=3)
    cases = scan_dataset(tmp_path)
    with pytest.raises(DataError, match="empty"):
        select_labeled(cases, 0)
    with pytest.raises(DataError, match="unknown case"):
        select_labeled(cases, "nobody")


def test_normalisation_is_zscore_after_clipping():
    v = np.random.default_rng(0).normal(500, 50, (4, 16, 16))
    v[0, 0, 0] = 1e6  # outlier is clipped
    n = normalize_intensity(v)
    assert abs(n.mean()) < 1e-4 and abs(n.std() - 1) < 1e-3
    assert n.max() < 5
    assert n.dtype == np.float32  # float64 input, float32 out: what the networks take
    assert normalize_intensity(np.full((2, 4, 4), 3.0)).dtype == np.float32  # constant too


def test_normalisation_matches_numpys_and_reads_a_read_only_scan_without_warning():
    # the clip, centring and scaling run in torch; the values are NumPy's formula's
    v = np.random.default_rng(1).gamma(2.0, 50.0, (6, 32, 40)).astype(np.float32)
    v.flags.writeable = False  # a memory-mapped or napari-held scan
    lo, hi = np.percentile(v, [0.5, 99.5])
    w = np.clip(v, lo, hi)
    want = (w - w.mean()) / w.std()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_intensity(v)
    assert out.dtype == np.float32 and np.abs(out - want).max() < 1e-4


def test_from_arrays_validates():
    img, lab = blob_volume(0)
    with pytest.raises(DataError, match="differs"):
        TrainData.from_arrays([img], [lab[:, :10]])
    with pytest.raises(DataError, match="empty"):
        TrainData.from_arrays([img], [np.full_like(lab, IGNORE_INDEX)])
    with pytest.raises(DataError, match="unknown class"):
        TrainData.from_arrays([img], [lab], num_classes=2)
    data = TrainData.from_arrays([img], [lab], [img])
    assert data.num_classes == 3 and data.images[0].dtype == np.float32
    assert data.summary()["unlabeled_volumes"] == 1


def test_slice_sampler_puts_unannotated_slices_in_unlabelled_pool():
    img, lab = blob_volume(0)
    lab = lab.copy()
    lab[1:3] = IGNORE_INDEX  # slices 1 and 2 not annotated
    lab[0, :5] = IGNORE_INDEX  # slice 0 partially annotated
    data = TrainData.from_arrays([img], [lab], [img[:1]])
    for s in (SliceSampler(data, (16, 16), labeled_bs=3, unlabeled_bs=2, seed=0),
              ResizedSliceSampler(data, (16, 16), labeled_bs=3, unlabeled_bs=2, seed=0)):
        assert len(s.lab_img) == 2 and len(s.unl_img) == 3
        lab_b, unl_b = s.next()
        assert lab_b["image"].shape == (3, 1, 16, 16) and unl_b["image"].shape == (2, 1, 16, 16)
        assert set(np.unique(lab_b["label"].numpy())) <= {0, 1, 2, IGNORE_INDEX}  # nearest


def test_slice_sampler_is_deterministic_under_seed():
    img, lab = blob_volume(0)
    data = TrainData.from_arrays([img], [lab])
    for kind in (SliceSampler, ResizedSliceSampler):
        a = kind(data, (16, 16), seed=3).next()[0]["image"]
        b = kind(data, (16, 16), seed=3).next()[0]["image"]
        assert np.array_equal(a.numpy(), b.numpy())


def test_a_rotated_slice_keeps_its_labels_and_marks_the_corners_unknown():
    from training.engine.data import _rotate

    img = torch.zeros(1, 32, 32)
    lab = torch.zeros(32, 32, dtype=torch.long)
    img[0, 12:20, 12:20], lab[12:20, 12:20] = 1.0, 2  # a centred square
    same_img, same_lab = _rotate(img, lab, 0.0)
    assert torch.allclose(same_img, img) and torch.equal(same_lab, lab)
    quarter_img, quarter_lab = _rotate(img, lab, 90.0)  # a square turned a quarter is itself
    assert torch.equal(quarter_lab, lab) and torch.allclose(quarter_img, img, atol=1e-5)
    rimg, rlab = _rotate(img, lab, 45.0)
    assert rlab[16, 16] == 2 and rimg[0, 16, 16] > 0.99  # the centre stays put
    # the corners come from outside the slice: not annotated, never "background"
    corners = {int(rlab[0, 0]), int(rlab[0, -1]), int(rlab[-1, 0]), int(rlab[-1, -1])}
    assert corners == {IGNORE_INDEX}
    assert set(torch.unique(rlab).tolist()) == {0, 2, IGNORE_INDEX}
    assert (rlab == 2).sum() == pytest.approx(64, rel=0.15)  # a diamond of the same area


def test_resized_slice_sampler_rotates_half_the_slices_reproducibly():
    img, lab = blob_volume(0)
    data = TrainData.from_arrays([img], [lab])
    plain = ResizedSliceSampler(data, (16, 16), labeled_bs=64, seed=3).next()[0]["label"]
    assert not (plain == IGNORE_INDEX).any()
    a = ResizedSliceSampler(data, (16, 16), labeled_bs=64, seed=3, rotate=20).next()[0]["label"]
    b = ResizedSliceSampler(data, (16, 16), labeled_bs=64, seed=3, rotate=20).next()[0]["label"]
    assert torch.equal(a, b)
    turned = (a == IGNORE_INDEX).flatten(1).any(1).float().mean()
    assert 0.25 < turned < 0.75  # about half the slices turned (their corners unknown)


def test_load_train_data_from_folder(tmp_path):
    write_dataset(tmp_path, n=4)
    data = load_train_data(tmp_path, 1)
    assert len(data.images) == 2 and len(data.unlabeled) == 1
    assert data.names == ["case00", "case01"]


def test_normalisation_of_a_big_scan_matches_exact_percentiles():
    # above SAMPLE_VOXELS the clip values come from a strided sample; the result must not move
    v = np.random.default_rng(0).gamma(2.0, 50.0, (40, 256, 256)).astype(np.float32)
    lo, hi = np.percentile(v, [0.5, 99.5])
    w = np.clip(v, lo, hi)
    exact = (w - w.mean()) / w.std()
    out = normalize_intensity(v)
    assert out.dtype == np.float32 and np.abs(out - exact).max() < 0.05
    assert v.max() > hi  # the caller's array is left as it was


def test_load_train_data_takes_the_unlabelled_cases_it_is_given(tmp_path):
    write_dataset(tmp_path, n=5, with_index=False)  # no splits: every other case is in the pool
    assert len(load_train_data(tmp_path, "case00").unlabeled) == 4
    assert len(load_train_data(tmp_path, "case00", unlabeled="case03, case04").unlabeled) == 2
    assert len(load_train_data(tmp_path, "case00", use_unlabeled=False).unlabeled) == 0
    with pytest.raises(DataError, match="unknown unlabelled"):
        load_train_data(tmp_path, "case00", unlabeled="case09")
    with pytest.raises(DataError, match="both labelled and unlabelled"):
        load_train_data(tmp_path, "case00,case01", unlabeled="case01")

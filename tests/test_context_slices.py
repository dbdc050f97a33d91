"""Neighbouring slices as input channels ("2.5-D", ``--context-slices K``): laid out the same
way in training and Predict, carried by the checkpoint, kept by a fine-tune."""

import numpy as np
import pytest
import torch
from test_channels import _lgg_like

from training.engine.augment import Augmentation, missing_channels
from training.engine.checkpoint import load_checkpoint
from training.engine.context import network_inputs, with_context_slices
from training.engine.data import DataError, TrainData
from training.engine.inference import context_slices, model_channels, predict_volume
from training.fit.trainer import TrainConfig, train


def test_each_slice_comes_with_its_neighbours_and_the_ends_repeat():
    scan = np.arange(4)[:, None, None] * np.ones((4, 2, 3))  # slice z holds the value z
    out = with_context_slices(scan.astype(np.float32), 1)
    assert out.shape == (4, 3, 2, 3)
    assert [list(out[z, :, 0, 0]) for z in range(4)] == [[0, 0, 1], [0, 1, 2], [1, 2, 3],
                                                         [2, 3, 3]]
    rgb = np.stack([scan, 10 + scan, 20 + scan], 1).astype(np.float32)  # (z, c, y, x)
    out = with_context_slices(rgb, 2)
    assert out.shape == (4, 15, 2, 3)  # neighbour by neighbour, each with its 3 channels
    assert list(out[1, :, 0, 0]) == [0, 10, 20, 0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]
    assert with_context_slices(scan, 0) is scan
    assert network_inputs(3, 2) == 15


def test_missing_channels_makes_each_slice_its_own_grey():
    x = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 9, 1, 1)  # 3 slices x 3 channels
    aug = Augmentation(p_missing_channels=1.0)
    out = missing_channels(x, aug, torch.Generator().manual_seed(0), scan_channels=3)
    for n in range(2):
        for s in range(3):  # every channel of slice s is that slice's channel 1 (FLAIR)
            assert torch.all(out[n, 3 * s:3 * s + 3] == x[n, 3 * s + 1])
    grey = missing_channels(x, aug, torch.Generator().manual_seed(0), scan_channels=1)
    assert torch.equal(grey, x)  # a grey scan's neighbours are not channels to replace


def _next_slice_task(seed: int, z: int = 8, size: int = 24):
    """Each slice shows a bright square somewhere; its label is where the *next* slice's square
    is (the last slice: its own). One slice alone cannot tell where its label lies."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 5, (z, size, size)).astype(np.float32)
    spots = [(int(rng.integers(2, size - 8)), int(rng.integers(2, size - 8))) for _ in range(z)]
    label = np.zeros((z, size, size), np.uint8)
    for k, (y, x) in enumerate(spots):
        image[k, y:y + 6, x:x + 6] += 200
        ny, nx = spots[min(k + 1, z - 1)]
        label[k, ny:ny + 6, nx:nx + 6] = 1
    return image, label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(((a == 1) & (b == 1)).sum()) / max(1, int((a == 1).sum() + (b == 1).sum()))


@pytest.mark.parametrize("k", [0, 1])
def test_a_network_with_context_slices_learns_what_lies_in_the_next_slice(tmp_path, k):
    scans = [_next_slice_task(s) for s in range(6)]
    data = TrainData.from_arrays([s[0] for s in scans[:5]], [s[1] for s in scans[:5]])
    cfg = TrainConfig(steps=200, size=[24, 24], labeled_bs=4, unlabeled_bs=0, base=8, depth=2,
                      unshuffle=1, augment="none", device="cpu", context_slices=k, lr=1e-2,
                      weights_ema=0.0, checkpoint=str(tmp_path / "m.pt"), log_every=1000)
    net, meta = load_checkpoint(train(cfg, data))
    assert context_slices(meta) == k and model_channels(meta) == 1
    assert meta["network"]["in_channels"] == 2 * k + 1
    image, truth = scans[5]  # a scan it never saw
    dice = _dice(predict_volume(net, meta, image, device="cpu")["labels"], truth)
    if k:
        assert dice > 0.9
    else:  # without the next slice the label's place is a guess
        assert dice < 0.5


def test_the_cli_trains_predicts_and_fine_tunes_a_model_with_context_slices(tmp_path, capsys):
    from training.cli import main
    from training.core.io import read_labels

    data = _lgg_like(tmp_path / "lgg")
    model = tmp_path / "ctx.pt"
    common = ["--data", str(data), "--labeled", "P,Q", "--channels", "3", "--dims", "2d",
              "--steps", "3", "--size", "32", "32", "--base", "4", "--depth", "2",
              "--labeled-bs", "2", "--unlabeled-bs", "0", "--device", "cpu"]
    assert main(["train", *common, "--context-slices", "1", "--out", str(model)]) == 0
    _, meta = load_checkpoint(model)
    assert meta["network"]["in_channels"] == 9 and meta["network"]["context_slices"] == 1
    assert model_channels(meta) == 3  # what a scan must bring: its own three channels
    from training.library.model_card import recipe_summary

    assert "each slice with 1 neighbouring slice on either side" in recipe_summary(meta)
    out = tmp_path / "q.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(data / "images" / "Q_001.png"),
                 "--output", str(out)]) == 0  # one slice: its neighbours are itself
    assert read_labels(out)[0].shape == (1, 32, 32)
    tuned = tmp_path / "tuned.pt"  # a fine-tune keeps the network's context slices
    assert main(["train", *common, "--init", str(model), "--out", str(tuned)]) == 0
    assert load_checkpoint(tuned)[1]["network"]["context_slices"] == 1
    capsys.readouterr()  # network options that differ from the --init network are refused
    for flag, value in (("--context-slices", "0"), ("--base", "8"), ("--depth", "3")):
        other = tmp_path / f"other{flag}.pt"
        assert main(["train", *common, "--init", str(model), flag, value,
                     "--out", str(other)]) != 0
        err = capsys.readouterr().err
        assert f"{flag} {value} differs from the --init network's" in err
        assert f"leave {flag} out" in err
        assert not other.exists()
    assert main(["train", *common, "--dims", "3d", "--size", "8", "16", "16",
                 "--context-slices", "1", "--out", str(tmp_path / "x.pt")]) != 0
    assert "--context-slices is for 2-D" in capsys.readouterr().err


def test_scans_with_context_cannot_take_more_context():
    image, label = _next_slice_task(0)
    data = TrainData.from_arrays([image], [label]).with_context(1)
    assert data.channels == 3 and data.scan_channels == 1
    assert data.with_context(1) is data
    with pytest.raises(DataError, match="already carry"):
        data.with_context(2)


@pytest.mark.parametrize("method", ["mean_teacher", "bcp", "act"])
def test_semi_supervised_methods_take_context_slices_on_unlabelled_scans_too(tmp_path, method):
    from test_training_synth import write_dataset

    from training.cli import main

    data = write_dataset(tmp_path / "data", n=4)  # one patient labelled, one train scan not
    out = tmp_path / f"{method}.pt"
    assert main(["train", "--data", str(data), "--method", method, "--labeled", "1", "--dims",
                 "2d", "--steps", "3", "--size", "16", "16", "--base", "4", "--depth", "2",
                 "--labeled-bs", "2", "--device", "cpu", "--context-slices", "1",
                 "--out", str(out)]) == 0
    _, meta = load_checkpoint(out)
    assert meta["data"]["unlabeled_volumes"] == 1 and context_slices(meta) == 1

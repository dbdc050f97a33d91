"""Scans with several channels (LGG's pre-contrast / FLAIR / post-contrast RGB slices): held,
sampled, trained and predicted with every channel, each normalised on its own."""

import numpy as np
import pytest

from training import IGNORE_INDEX
from training.engine.augment import Augmentation
from training.engine.data import DataError, TrainData
from training.engine.patches import SliceSampler


def _rgb_scan(seed=0, shape=(6, 40, 48)):
    """A (z, y, x, 3) scan whose square shows only in its last channel: the first two are
    noise on grey scales of their own, so a grey (one-channel) reader cannot find it."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    labels = np.zeros(shape, np.uint8)
    y0, x0 = rng.integers(4, h - 16), rng.integers(4, w - 16)
    labels[:, y0:y0 + 12, x0:x0 + 12] = 1
    image = np.stack([rng.normal(100, 20, shape), rng.normal(2000, 300, shape),
                      rng.normal(50, 5, shape) + 40.0 * labels], -1).astype(np.float32)
    return image, labels


def test_channels_are_held_first_and_normalised_one_by_one():
    image, labels = _rgb_scan()
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    assert data.channels == 3
    held = data.images[0]
    assert held.shape == (6, 3, 40, 48)
    for k in range(3):  # each channel z-scored alone, whatever its own grey scale
        assert abs(float(held[:, k].mean())) < 0.05
        assert abs(float(held[:, k].std()) - 1) < 0.05


def test_bad_channel_input_is_refused_clearly():
    image, labels = _rgb_scan()
    with pytest.raises(DataError, match="differ in channels"):
        TrainData.from_arrays([image, image[..., 0]], [labels, labels])
    with pytest.raises(DataError, match="label shape"):
        TrainData.from_arrays([image], [labels[:, :-1]])
    with pytest.raises(DataError, match="NaN"):
        bad = image.copy()
        bad[0, 0, 0, 2] = np.nan
        TrainData.from_arrays([bad], [labels])


def test_patches_keep_channels_and_labels_aligned():
    image, labels = _rgb_scan()
    image[..., 0] = labels * 10.0  # channel 0 repeats the labels, channel 2 too (scaled)
    labels[:2] = IGNORE_INDEX  # two slices not painted
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    s = SliceSampler(data, (32, 32), labeled_bs=16, unlabeled_bs=4, seed=3,
                     augmentation=Augmentation(p_gamma=0, p_contrast=0, p_brightness=0,
                                               p_noise=0))
    lab_batch, unl_batch = s.next()
    img, lab = lab_batch["image"], lab_batch["label"]
    assert img.shape == (16, 3, 32, 32) and unl_batch["image"].shape == (4, 3, 32, 32)
    known = lab != IGNORE_INDEX
    inside = img[:, 0] > 0  # z-scored: the structure above the mean, the rest below
    # where channel 0 says "structure", the labels do too (nearest vs bilinear at edges aside)
    agree = (inside[known] == (lab[known] == 1)).float().mean()
    assert agree > 0.97


def test_a_three_channel_model_trains_and_predicts_from_rgb(tmp_path):
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import dice_hd95
    from training.fit.trainer import TrainConfig, train

    scans = [_rgb_scan(k) for k in range(3)]
    data = TrainData.from_arrays([s[0] for s in scans], [s[1] for s in scans], num_classes=2)
    # equal odds: 60-120 steps of this 4-channel toy network never lifted the square out of a
    # start at the class shares (Dice 0.0 and 0.15), while from equal odds it reaches 0.9 in 60;
    # the default start is chosen on real scans (benchmarks/results/acdc_prior_init.md)
    cfg = TrainConfig(steps=60, size=[32, 32], labeled_bs=4, unlabeled_bs=0, base=4, depth=2,
                      device="cpu", checkpoint=str(tmp_path / "rgb.pt"), lr=3e-3,
                      prior_init=False)
    model, meta = load_checkpoint(train(cfg, data))
    assert model_channels(meta) == 3
    image, labels = _rgb_scan(7)  # an unseen scan
    out = predict_volume(model, meta, image)
    assert out["labels"].shape == labels.shape and out["uncertainty"].shape == labels.shape
    dice = dice_hd95(out["labels"], labels, 2)["dice"][0]
    assert dice > 0.8  # the square is only in channel 2: the network reads it
    with pytest.raises(ValueError, match="3 channels"):
        predict_volume(model, meta, image[..., 1])  # a grey scan for an RGB model


def test_channels_need_the_native_grid_2d_recipe(tmp_path):
    from training.fit.trainer import TrainConfig, train

    image, labels = _rgb_scan()
    data = TrainData.from_arrays([image], [labels], num_classes=2)
    for extra in ({"dims": 3, "size": [4, 16, 16]}, {"sampling": "resize", "size": [32, 32]}):
        cfg = TrainConfig(steps=1, labeled_bs=1, unlabeled_bs=0, base=4, depth=2,
                          device="cpu", checkpoint=str(tmp_path / "x.pt"), **extra)
        with pytest.raises(DataError, match="channels"):
            train(cfg, data)


def _lgg_like(root, patients=("P", "Q"), n=4, size=32):
    """A folder as the LGG set lays it out: RGB PNG slices, 0/255 masks, an index.csv with a
    patient column. The square shows in the third channel only."""
    import SimpleITK as sitk

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,mask,patient,slice,has_tumor,tumor_pixels"]
    rng = np.random.default_rng(1)
    for p in patients:
        for k in range(1, n + 1):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(4, size - 14, 2)
            mask[y:y + 10, x:x + 10] = 255
            rgb = np.stack([rng.integers(60, 200, (size, size)),
                            rng.integers(60, 200, (size, size)),
                            40 + (mask > 0) * 150 + rng.integers(0, 20, (size, size))],
                           -1).astype(np.uint8)
            name = f"{p}_{k:03d}.png"
            sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(root / "images" / name))
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "masks" / name))
            rows.append(f"images/{name},masks/{name},{p},{k},1,100")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def _train_rgb(data, model, steps: int):
    """`semiseg train --channels 3` on an :func:`_lgg_like` folder: a tiny 3-channel model."""
    from training.cli import main

    assert main(["train", "--data", str(data), "--labeled", "P,Q", "--channels", "3",
                 "--dims", "2d", "--steps", str(steps), "--size", "32", "32", "--base", "4",
                 "--depth", "2", "--labeled-bs", "2", "--unlabeled-bs", "0", "--device", "cpu",
                 "--out", str(model)]) == 0
    return model


def test_the_cli_trains_on_every_channel_and_predicts_a_patient_folder(tmp_path, capsys):
    import shutil

    from training.cli import main
    from training.core.io import read_labels
    from training.engine.checkpoint import load_checkpoint

    data = _lgg_like(tmp_path / "lgg")
    model = _train_rgb(data, tmp_path / "rgb.pt", steps=3)
    _, meta = load_checkpoint(model)
    assert meta["network"]["in_channels"] == 3
    patient = tmp_path / "patient"
    patient.mkdir()
    for f in sorted((data / "images").glob("Q_*.png")):
        shutil.copy(f, patient / f.name)
    out = tmp_path / "q.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(patient),
                 "--output", str(out)]) == 0
    assert read_labels(out)[0].shape == (4, 32, 32)
    # a grey scan cannot feed a model that reads three channels: said, nothing written
    import SimpleITK as sitk

    grey = tmp_path / "grey.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 32, 32), np.float32)), str(grey))
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--input", str(grey),
                 "--output", str(tmp_path / "g.nii.gz")]) != 0
    assert "reads 3 channels" in capsys.readouterr().err
    assert not (tmp_path / "g.nii.gz").exists()


def _rgb_model(tmp_path):
    """A tiny 3-channel model trained a few steps on RGB scans: (path, a test scan, labels)."""
    from training.fit.trainer import TrainConfig, train

    scans = [_rgb_scan(k) for k in range(2)]
    data = TrainData.from_arrays([s[0] for s in scans], [s[1] for s in scans], num_classes=2)
    cfg = TrainConfig(steps=3, size=[32, 32], labeled_bs=2, unlabeled_bs=0, base=4, depth=2,
                      device="cpu", checkpoint=str(tmp_path / "rgb.pt"))
    return train(cfg, data), *_rgb_scan(5)


def test_a_session_feeds_each_model_what_it_reads(tmp_path):
    from napari_semiseg.session import Session, SessionError, scan_channels

    path, image, _ = _rgb_model(tmp_path)
    s = Session(image[..., 1], channels=scan_channels(image, rgb=True), autosave=False)
    assert s.model_input(1) is s.image and s.model_input(3).shape == (6, 40, 48, 3)
    grey = Session(image[..., 1], autosave=False)
    with pytest.raises(SessionError, match="reads 3 channels"):
        grey.model_input(3)
    with pytest.raises(SessionError, match="channels"):
        Session(image[..., 1], channels=image[:, :-1], autosave=False)


def test_a_retrain_of_an_rgb_model_trains_and_predicts_on_every_channel(tmp_path):
    from napari_semiseg.retrain_job import make_job, run_retrain
    from napari_semiseg.session import Session, SessionError, scan_channels

    path, image, truth = _rgb_model(tmp_path)
    s = Session(image[..., 1], channels=scan_channels(image, rgb=True),
                folder=tmp_path / "session")
    s.add_version(path, note="rgb model")
    s.prediction[2] = truth[2]
    s.detect_painted_slices(indices=(np.array([2]), np.array([0]), np.array([0])), axis=0)
    other_rgb, _ = _rgb_scan(8)
    job = make_job(s, unlabelled_volumes=[other_rgb, other_rgb[..., 0]], steps=2,
                   work_dir=tmp_path / "jobs", device="cpu", method="mean_teacher",
                   labeled_bs=2, unlabeled_bs=2)
    assert np.load(job.image).shape == (6, 40, 48, 3)
    assert len(job.unlabelled) == 1  # the grey one cannot feed a model that reads RGB
    events: list[dict] = []
    run_retrain(job, events.append, lambda: False)
    assert events[-1]["type"] == "done", events[-1]
    assert np.load(events[-1]["prediction"]).shape == (6, 40, 48)
    grey = Session(image[..., 1], folder=tmp_path / "grey")
    grey.add_version(path, note="rgb model")
    grey.prediction[2] = truth[2]
    grey.detect_painted_slices(indices=(np.array([2]), np.array([0]), np.array([0])), axis=0)
    with pytest.raises(SessionError, match="reads 3 channels"):
        make_job(grey, work_dir=tmp_path / "jobs2")


def test_missing_channel_augmentation_fills_every_channel_with_the_grey_one():
    import torch

    from training.core.io import RGB_CHANNEL
    from training.engine.augment import missing_channels

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    out = missing_channels(x, Augmentation(p_missing_channels=1.0), gen)
    for k in range(3):
        assert torch.equal(out[:, k], x[:, RGB_CHANNEL])
    some = missing_channels(x, Augmentation(p_missing_channels=0.5), gen)
    filled = (some == some[:, RGB_CHANNEL:RGB_CHANNEL + 1]).flatten(1).all(1)
    assert 16 < int(filled.sum()) < 48  # about half, the rest untouched
    assert torch.equal(some[~filled], x[~filled])
    assert torch.equal(missing_channels(x, Augmentation(), gen), x)  # off by default
    grey = torch.randn(4, 1, 8, 8)
    assert torch.equal(missing_channels(grey, Augmentation(p_missing_channels=1.0), gen), grey)


def test_the_card_says_a_model_reads_channels_and_how_it_was_augmented():
    from training.library.model_card import recipe_summary

    meta = {"dims": 2, "sampling": "patch", "size": [256, 256],
            "network": {"in_channels": 3},
            "config": {"augment": "anatomy", "missing_channels": 0.2, "steps": 10,
                       "labeled_bs": 4, "lr": 1e-3}}
    line = recipe_summary(meta)
    assert line.startswith("3 channels in; native-grid patches 256x256")
    assert "every channel FLAIR in 20 % of patches" in line
    grey = recipe_summary({**meta, "network": {"in_channels": 1}, "config": {"steps": 10}})
    assert "channels" not in grey


def test_a_reopened_session_of_an_rgb_stack_keeps_its_channels(tmp_path):
    from conftest import SAMPLES

    from napari_semiseg.session import Session

    lgg = SAMPLES / "lgg/TCGA_CS_4941_19960909/images"
    s = Session.from_file(lgg, folder=tmp_path / "session")
    assert s.channels.shape == (*s.image.shape, 3)
    assert np.array_equal(s.channels[..., 1], s.image)  # the grey image is the FLAIR channel
    s.save()
    s.close()  # the folder is released, as when its window closes
    back = Session.open(tmp_path / "session")
    assert np.array_equal(back.model_input(3), s.channels)


def test_the_effort_benchmark_starts_from_a_model_that_reads_three_channels(tmp_path):
    """As the dock gives it: every channel of an RGB stack reaches the shipped LGG model."""
    from training.bench.effort import load_cases
    from training.cli import main

    data = _lgg_like(tmp_path / "lgg")
    model = _train_rgb(data, tmp_path / "rgb.pt", steps=2)
    cases, _ = load_cases(data, 1, None, keep_channels=True)
    assert cases[0][1].shape == (4, 32, 32, 3) and cases[0][2].shape == (4, 32, 32)
    assert load_cases(data, 1, None)[0][0][1].shape == (4, 32, 32)  # grey: FLAIR alone
    out = tmp_path / "effort.md"
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "99",
                 "--k-max", "1", "--steps", "2", "--split", "", "--start", str(model),
                 "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| 1 | P |" in text
    # as the dock from a given model: the ends first where the model falls short
    assert "on every scan the structure's first" in text


def test_the_effort_benchmark_can_give_a_new_model_every_channel(tmp_path, capsys):
    from training.cli import main

    data = _lgg_like(tmp_path / "lgg")
    out = tmp_path / "effort.md"
    common = ["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "99",
              "--k-max", "3", "--steps", "2", "--split", ""]
    assert main([*common, "--new-model-channels", "all", "--out", str(out)]) == 0
    assert "reads the scan's 3 channels" in out.read_text(encoding="utf-8")
    assert main([*common, "--new-model-channels", "grey", "--out", str(out)]) == 0
    assert "channels" not in out.read_text(encoding="utf-8").split("- start:")[1].split(";")[0]
    model = _train_rgb(data, tmp_path / "rgb.pt", steps=1)
    capsys.readouterr()
    assert main([*common, "--start", str(model), "--new-model-channels", "all",
                 "--out", str(out)]) != 0
    assert "--new-model-channels is for a New model" in capsys.readouterr().err


def test_the_effort_benchmark_takes_named_patients_in_their_order(tmp_path):
    # LGG keeps its val and test patients in benchmarks/splits, not in index.csv
    from training.bench.effort import load_cases
    from training.core.io import DataError

    data = _lgg_like(tmp_path / "lgg", patients=("P", "Q", "R"), n=2, size=20)
    assert [c[0] for c in load_cases(data, 5, None)[0]] == ["P", "Q", "R"]
    assert [c[0] for c in load_cases(data, 5, None, patients=["R", "P"])[0]] == ["R", "P"]
    assert [c[0] for c in load_cases(data, 1, None, patients=["R", "P"])[0]] == ["R"]
    with pytest.raises(DataError, match="'S'"):
        load_cases(data, 5, None, patients=["S"])

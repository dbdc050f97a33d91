"""The air around the body in a scan with channels: found, and set darkest where one channel
shows it grey, so that such a scan reaches the network as scans with black air do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.engine.normalization import (
    DEFAULT_NORMALIZATION,
    normalize_channels,
    outside_the_body,
)

DARKEST = {**DEFAULT_NORMALIZATION, "outside": "darkest"}


def head_scan(air: tuple[float, float, float] = (0, 0, 0), seed: int = 0) -> np.ndarray:
    """(4, 64, 64, 3): a head (disc of tissue with a dark ventricle) in air, three sequences
    with their own grey scales; ``air`` is each channel's air level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64]
    head = (y - 32) ** 2 + (x - 32) ** 2 < 26**2
    ventricle = (y - 30) ** 2 + (x - 34) ** 2 < 6**2
    lesion = (y - 40) ** 2 + (x - 22) ** 2 < 5**2
    scan = np.zeros((4, 64, 64, 3), np.float32)
    for k, (tissue, csf, bright) in enumerate([(120, 20, 60), (90, 10, 200), (110, 15, 120)]):
        ch = np.where(head, tissue, air[k]).astype(np.float32)
        ch = np.where(ventricle, csf, ch)
        ch = np.where(lesion & head, bright, ch)
        scan[..., k] = ch + rng.normal(0, 2, ch.shape)
    return np.clip(scan, 0, 255)


def test_the_air_is_found_around_the_head_not_in_a_dark_ventricle():
    scan = head_scan(air=(61, 0, 0))  # grey air in one sequence, as TCGA_FG_A4MU's T1
    air = outside_the_body(scan)
    y, x = np.mgrid[:64, :64]
    outside = (y - 32) ** 2 + (x - 32) ** 2 >= 26**2
    assert (air == outside[None]).mean() > 0.99
    assert not air[:, 30, 34].any()  # the ventricle is dark in every channel, yet inside


def test_a_slice_filled_by_the_body_has_no_air():
    scan = np.full((2, 16, 16, 3), 100.0, np.float32)
    scan[:, 6:10, 6:10] = 0  # dark, but enclosed
    assert not outside_the_body(scan).any()


def test_grey_air_reaches_the_network_as_black_air_does():
    black, grey = head_scan((0, 0, 0)), head_scan((61, 0, 0))
    before = np.abs(normalize_channels(grey) - normalize_channels(black))[:, 0].mean()
    after = np.abs(normalize_channels(grey, DARKEST) - normalize_channels(black, DARKEST))[:, 0]
    assert after.mean() < 0.2 * before  # nearly the black-air scan's input
    # the other channels' air was dark: they are left exactly as they were
    for k in (1, 2):
        assert np.array_equal(normalize_channels(grey, DARKEST)[:, k],
                              normalize_channels(grey)[:, k])


def test_a_scan_whose_air_is_black_is_left_bit_for_bit():
    black = head_scan((0, 0, 0))
    assert np.array_equal(normalize_channels(black, DARKEST), normalize_channels(black))
    everywhere = {**DEFAULT_NORMALIZATION, "outside": "darkest_everywhere"}
    assert not np.array_equal(normalize_channels(black, everywhere), normalize_channels(black))


def test_an_unknown_air_treatment_is_refused():
    with pytest.raises(ValueError, match="air outside the body"):
        normalize_channels(head_scan(), {**DEFAULT_NORMALIZATION, "outside": "grey"})


def test_the_cli_trains_carries_and_refuses_the_air_setting(tmp_path, capsys):
    from test_channels import _lgg_like

    from training.cli import main
    from training.engine.checkpoint import load_checkpoint

    data = _lgg_like(tmp_path / "lgg")
    common = ["train", "--data", str(data), "--labeled", "P,Q", "--dims", "2d", "--steps", "2",
              "--size", "32", "32", "--base", "4", "--depth", "2", "--labeled-bs", "2",
              "--unlabeled-bs", "0", "--device", "cpu"]
    model = tmp_path / "air.pt"
    assert main([*common, "--channels", "3", "--air-outside", "darkest",
                 "--out", str(model)]) == 0
    assert load_checkpoint(model)[1]["normalization"]["outside"] == "darkest"
    tuned = tmp_path / "tuned.pt"  # a fine-tune reads its scans as its network did
    assert main([*common, "--channels", "3", "--init", str(model), "--out", str(tuned)]) == 0
    assert load_checkpoint(tuned)[1]["normalization"]["outside"] == "darkest"
    capsys.readouterr()
    assert main([*common, "--channels", "3", "--init", str(model), "--air-outside", "keep",
                 "--out", str(tmp_path / "other.pt")]) != 0
    assert "--air-outside keep differs from the --init network's darkest" in capsys.readouterr().err
    assert main([*common, "--air-outside", "darkest", "--out", str(tmp_path / "grey.pt")]) != 0
    assert "--air-outside is for scans read with their channels" in capsys.readouterr().err
    assert main([*common[:3], "--tags", str(tmp_path / "tags.csv"), "--air-outside", "darkest",
                 "--out", str(tmp_path / "weak.pt")]) != 0  # weak labels read the grey channel
    assert "--air-outside goes with --labeled" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("grey.pt", "other.pt", "weak.pt"))


def test_a_card_stores_the_air_setting_and_names_it(tmp_path, capsys):
    from test_channels import _lgg_like, _train_rgb

    from training.cli import main
    from training.engine.checkpoint import load_checkpoint
    from training.library.model_card import recipe_summary

    data = _lgg_like(tmp_path / "lgg")
    model = _train_rgb(data, tmp_path / "rgb.pt", steps=2)
    assert "air" not in recipe_summary(load_checkpoint(model)[1])
    card = ["card", "--model", str(model), "--data", str(data), "--anatomy", "Brain",
            "--modality", "MRI", "--trained-with", "semiseg train ...", "--split-note", "toy",
            "--train-patients", "P", "--test-patients", "Q", "--air-outside", "darkest"]
    assert main(card) == 0
    meta = load_checkpoint(model)[1]
    assert meta["normalization"]["outside"] == "darkest"
    assert "air around the body set darkest in a channel that shows it grey" in \
        recipe_summary(meta)
    grey = tmp_path / "grey.pt"  # a model of one channel has no channels to compare
    assert main(["train", "--data", str(data), "--labeled", "P,Q", "--dims", "2d", "--steps",
                 "1", "--size", "32", "32", "--base", "4", "--depth", "2", "--labeled-bs", "2",
                 "--unlabeled-bs", "0", "--device", "cpu", "--out", str(grey)]) == 0
    capsys.readouterr()
    card[card.index("--model") + 1] = str(grey)
    assert main(card) != 0
    assert "--air-outside is for models that read a scan's channels" in capsys.readouterr().err


def test_a_card_can_store_the_weights_as_float16_and_scores_what_ships(tmp_path):
    """A shipped model under its size cap: the card halves the file first and is built from
    the halved file (its network line says so), and Predict with the stored weights gives
    the float32 model's probabilities to float16 rounding."""
    import shutil

    from test_channels import _lgg_like, _train_rgb

    from training.cli import main
    from training.engine.checkpoint import load_checkpoint

    data = _lgg_like(tmp_path / "lgg")
    full = _train_rgb(data, tmp_path / "full.pt", steps=2)
    half = tmp_path / "half.pt"
    shutil.copy(full, half)
    card = ["--data", str(data), "--anatomy", "Brain", "--modality", "MRI", "--trained-with",
            "semiseg train ...", "--split-note", "toy", "--train-patients", "P",
            "--test-patients", "Q"]
    assert main(["card", "--model", str(full), *card]) == 0
    assert main(["card", "--model", str(half), *card, "--store", "float16"]) == 0

    def weights(path):
        state = torch.load(path, weights_only=True)["state_dict"]
        return {v.dtype for v in state.values() if v.is_floating_point()}, sum(
            v.numel() * v.element_size() for v in state.values() if v.is_floating_point())

    (dtypes, stored), (_, before) = weights(half), weights(full)
    assert dtypes == {torch.float16} and stored == before // 2
    assert half.stat().st_size < full.stat().st_size - before // 3
    meta = load_checkpoint(half)[1]
    assert meta["stored_dtype"] == "float16"
    assert "weights stored as float16" in meta["card"]["network"]
    full_net, full_meta = load_checkpoint(full)
    assert "float16" not in full_meta["card"]["network"]
    from training.engine.inference import predict_volume

    scan = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    p32 = predict_volume(full_net, full_meta, scan, device="cpu")["probabilities"]
    p16 = predict_volume(load_checkpoint(half)[0], meta, scan, device="cpu")["probabilities"]
    assert np.abs(p32 - p16).max() < 1e-2 and np.abs(p32 - p16).max() > 0

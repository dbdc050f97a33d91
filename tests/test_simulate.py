"""The simulated clinician: correct K slices, retrain, measure Dice on the uncorrected ones."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.bench.simulate import (
    add_subcommand,
    format_table,
    run_from_args,
    simulate_case,
    synthetic_case,
    uncorrected_dice,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    import torch

    from training.engine.checkpoint import save_checkpoint
    from training.engine.networks import UNet

    torch.manual_seed(0)
    meta = {"num_classes": 2, "class_names": ["background", "disc"], "dims": 2,
            "size": [32, 32],
            "normalization": {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}}
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_checkpoint(path, UNet(2, 1, 2, base=4, depth=2), meta)


def test_uncorrected_dice_leaves_out_corrected_slices():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[1] = 0  # slice 1 is wrong, and it is the corrected one
    assert uncorrected_dice(pred, truth, [1]) == 1.0
    assert uncorrected_dice(pred, truth, [0]) < 1.0
    assert uncorrected_dice(pred[:, :, 3:4].swapaxes(0, 2), truth[:, :, 3:4].swapaxes(0, 2),
                            [1], axis=2) == 1.0


def test_simulate_case_reports_before_and_after(tiny_model):
    image, truth = synthetic_case((6, 32, 32), seed=4)
    row = simulate_case(image, truth, tiny_model, corrections=3, strategy="uncertainty",
                        retrain_steps=2, method="supervised", device="cpu", hold_back=True,
                        labeled_bs=2, unlabeled_bs=2, name="disc")
    assert row["case"] == "disc" and row["corrections"] == 3 and len(set(row["slices"])) == 3
    assert len(row["held_back"]) == 1 and row["held_back"][0] in row["slices"]
    assert 0.0 <= row["dice_before"] <= 1.0 and 0.0 <= row["dice_after"] <= 1.0
    assert row["delta"] == pytest.approx(row["dice_after"] - row["dice_before"])
    assert row["dice_kept"] == (row["dice_after"] if row["adopted"] else row["dice_before"])
    assert row["retrain_s"] > 0 and row["wall_s"] >= row["retrain_s"]
    table = format_table([row])
    assert "| disc | supervised | 3 | uncertainty |" in table and "**mean** (1)" in table


def _dataset(root: Path, n: int = 2) -> Path:
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for k in range(n):
        image, truth = synthetic_case((5, 32, 32), seed=10 + k)
        sitk.WriteImage(sitk.GetImageFromArray((image * 100).astype(np.int16)),
                        str(root / "images" / f"case{k}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(truth), str(root / "labels" / f"case{k}.nii.gz"))
    return root


def test_simulate_command(tiny_model, tmp_path):
    parser = argparse.ArgumentParser(prog="semiseg")
    add_subcommand(parser.add_subparsers(dest="command"))
    data = _dataset(tmp_path / "data")
    out = tmp_path / "table.md"
    args = parser.parse_args([
        "simulate", "--data", str(data), "--model", tiny_model, "--corrections", "2",
        "--strategy", "even", "--retrain-steps", "2", "--cases", "1", "--device", "cpu",
        "--out", str(out)])
    assert args.func is run_from_args
    assert run_from_args(args) == 0
    text = out.read_text(encoding="utf-8")
    assert "--corrections 2 --strategy even" in text
    assert "| case0 | supervised | 2 | even |" in text and "case1" not in text
    bad = parser.parse_args(["simulate", "--data", str(tmp_path / "none"), "--model",
                             tiny_model])
    assert run_from_args(bad) == 2

"""The model library: shipped checkpoints carry cards, and the chooser picks per scan."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES

from napari_semiseg.model_library import SHIPPED_DIR, choose, library
from napari_semiseg.session import grey_scan
from training.core.io import read_volume
from training.engine.postprocess import POSTPROCESS_MODES
from training.library.model_card import match, scan_statistics, summarise

SAMPLE_SCANS = {
    "acdc": SAMPLES / "acdc/patient001_frame01.nii.gz",
    "left_atrium": SAMPLES / "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz",
    "lgg": SAMPLES / "lgg/TCGA_CS_4941_19960909/images",
}
REPO = Path(__file__).resolve().parents[1]
# which shipped card each sample belongs to (by the card's anatomy)
ANATOMY = {"acdc": "Heart", "left_atrium": "Left atrium", "lgg": "Brain"}


def _stats(path):
    vol = read_volume(path)
    spacing = list(vol.geometry.spacing)[::-1]
    spacing = [1.0, *spacing] if len(spacing) == 2 else spacing
    return grey_scan(vol.data, vol.rgb), spacing, (vol.data.shape[-1] if vol.rgb else 1)


def test_every_shipped_checkpoint_loads_safely_and_carries_its_card():
    paths = [p for p in SHIPPED_DIR.glob("*.pt") if ".teacher." not in p.name]
    assert paths
    for p in paths:
        payload = torch.load(p, map_location="cpu", weights_only=True)  # no code can run
        card = payload["meta"]["card"]
        assert card["anatomy"] and card["modality"] and card["command"]
        assert [c["name"] for c in card["classes"]] == payload["meta"]["class_names"]
        assert card["test"]["cases"] > 0 and len(card["test"]["dice"]) == len(card["classes"]) - 1
        # the clean-up chosen on validation scans is the one every prediction gets, and the
        # card's test Dice was measured with it
        assert payload["meta"]["postprocess"] == card["postprocess"]
        assert card["postprocess"] in POSTPROCESS_MODES
        table = re.search(r"benchmarks/results/\S+\.md", card["postprocess_note"])
        assert table and (REPO / table.group(0)).is_file()  # the choice's table ships with it
        assert p.stat().st_size <= 5 * 1024 * 1024  # the wheel stays small
        # trained on the recipe: native-grid patches, predicted by sliding windows
        assert payload["meta"]["sampling"] == "patch", p.name
        assert "native-grid patches" in card["recipe"] and "sliding-window" in card["recipe"]


@pytest.mark.parametrize("sample", sorted(SAMPLE_SCANS))
def test_the_chooser_picks_the_matching_model_or_says_none_fits(sample):
    models = library(include_user=False)
    image, spacing, channels = _stats(SAMPLE_SCANS[sample])
    best, why = choose(models, image, spacing, channels)
    shipped = {m.card["anatomy"].split()[0] for m in models if m.card}
    wanted = ANATOMY[sample].split()[0]
    if wanted in shipped:
        assert best is not None and best.card["anatomy"].startswith(ANATOMY[sample]), why
    else:  # no model of this anatomy yet: a clear warning, never another anatomy's classes
        assert best is None and "does not look like" in why.lower() and "New model" in why


def test_a_scan_unlike_every_card_gets_the_warning():
    models = library(include_user=False)
    noise = np.random.default_rng(0).normal(size=(200, 64, 64)).astype(np.float32)
    best, why = choose(models, noise, [0.2, 3.0, 3.0], 1)
    assert best is None and "does not look like" in why.lower()


def test_match_names_what_differs():
    rng = np.random.default_rng(0)
    scans = [scan_statistics(rng.normal(size=(10, 32, 32)), [8.0, 1.5, 1.5]) for _ in range(3)]
    card = {"scans": summarise(scans)}
    same, reasons = match(card, scans[0])
    assert same < 0.5 and reasons == []
    other = scan_statistics(rng.normal(size=(90, 32, 32)), [0.6, 0.6, 0.6], channels=3)
    far, reasons = match(card, other)
    assert far > 3 and any("channel" in r for r in reasons) and any("slices" in r for r in reasons)


def test_the_gpu_library_script_trains_lgg_on_train_and_val():
    """The one-lease library script trains the LGG model on what the shipped one saw."""
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import gpu_library
    finally:
        sys.path.remove(str(bench))
    splits = json.loads((bench / "splits" / "lgg.json").read_text())
    got = gpu_library._labeled(gpu_library.LIBRARY["lgg_flair_unet2d"]["labeled"]).split(",")
    assert got == splits["train"] + splits["val"] and len(got) == 30
    assert gpu_library._labeled("31") == "31"

"""The clean-up choice scripts score what the network drew, not what a clean-up left of it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_training_synth import TINY, write_dataset

import training.engine.inference as inference
from training.engine.checkpoint import save_checkpoint
from training.engine.networks import build_network
from training.engine.postprocess import keep_main_pieces

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def speckled(monkeypatch):
    """Predict draws each blob scan's truth (by its intensities) plus a far speck of class 1,
    and applies the model's own clean-up unless told not to, as the real Predict does."""

    def predict(model, meta, volume, *a, clean_up=True, **k):
        v = np.asarray(volume, np.float32)
        labels = np.where(v > 325, 1, np.where(v > 175, 2, 0)).astype(np.uint8)
        labels[:, 30:32, 30:32] = 1
        if clean_up:
            labels = keep_main_pieces(labels, meta.get("postprocess") or "none")
        return {"labels": labels}

    monkeypatch.setattr(inference, "predict_volume", predict)
    monkeypatch.syspath_prepend(str(BENCH))


def _model(path: Path, postprocess: str) -> str:
    save_checkpoint(path, build_network(TINY), {**TINY, "num_classes": 3,
                                                "postprocess": postprocess})
    return str(path)


def _means(report: Path) -> list[float]:
    row = next(line for line in report.read_text().splitlines() if "**mean ± sd**" in line)
    return [float(x) for x in re.findall(r"\*\*([\d.]+) ±", row)]


def test_postprocess_choice_scores_the_raw_labels_of_a_model_that_names_a_clean_up(
        tmp_path, speckled):
    import postprocess_choice

    data = write_dataset(tmp_path / "d", n=2)
    model = _model(tmp_path / "m.pt", "per_class")  # it already drops the speck itself
    out = tmp_path / "choice.md"
    assert postprocess_choice.main(["--model", model, "--data", str(data), "--split", "",
                                    "--out", str(out)]) == 0
    none, foreground, per_class, small_pieces = _means(out)
    assert none < 99.0  # the speck counts against "none", as the network drew it
    assert per_class == pytest.approx(100.0) and small_pieces == pytest.approx(100.0)
    assert foreground < 90.0  # the largest piece alone loses the square


def test_folds_choice_scores_each_patient_once_and_reports_every_candidate(tmp_path, speckled):
    import folds_clean_up_choice

    data = write_dataset(tmp_path / "d", n=3)
    a, b = _model(tmp_path / "a.pt", "none"), _model(tmp_path / "b.pt", "none")
    out = tmp_path / "folds.md"
    assert folds_clean_up_choice.main(["--data", str(data), "--fold", f"{a}=case00,case01",
                                       "--fold", f"{b}=case02", "--out", str(out)]) == 0
    text = out.read_text()
    assert "3 patients in 2 folds" in text
    none, largest, drop10, drop25 = _means(out)
    assert none < 99.0 and drop10 == pytest.approx(100.0) and drop25 == pytest.approx(100.0)
    assert largest < 90.0
    assert "drop < 25 % − none: mean +" in text and "worse on 0 of 3 patients" in text
    with pytest.raises(SystemExit):  # a fold must name its patients
        folds_clean_up_choice.main(["--data", str(data), "--fold", f"{a}=", "--out", str(out)])

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


def test_predict_options_smooth_fill_and_drop_as_named(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from folds_predict_options import drop_unsure_pieces, fill_slice_holes, z_smooth

    flat = np.full((4, 3, 3), 0.6, np.float32)
    np.testing.assert_allclose(z_smooth(flat), flat, rtol=1e-6)  # edges renormalised
    one = np.zeros((3, 1, 1), np.float32)
    one[1] = 1.0
    np.testing.assert_allclose(z_smooth(one)[:, 0, 0], [1 / 3, 0.5, 1 / 3], rtol=1e-6)

    ring = np.zeros((1, 7, 7), np.uint8)
    ring[0, 1:6, 1:6] = 1
    ring[0, 3, 3] = 0
    assert fill_slice_holes(ring)[0, 3, 3] == 1 and fill_slice_holes(ring).sum() == 25

    labels = np.zeros((1, 10, 10), np.uint8)
    labels[0, :4, :4] = 1  # the largest piece: kept even when unsure
    labels[0, 8:, 8:] = 1
    fg = np.full(labels.shape, 0.6, np.float32)
    out = drop_unsure_pieces(labels, fg)
    assert out[0, :4, :4].all() and not out[0, 8:, 8:].any()
    fg[0, 8:, 8:] = 0.9  # a sure small piece stays
    assert drop_unsure_pieces(labels, fg)[0, 8:, 8:].all()


def test_meta_choice_merges_each_arms_settings_and_reports_the_worst_change(tmp_path,
                                                                           monkeypatch):
    """Predict reads the arm's settings from the metadata it is given: nested settings are
    merged into the model's own (its normalisation keeps its other keys), and the clean-up
    named on the command line is the one Predict applies."""
    seen = []

    def predict(model, meta, volume, *a, **k):
        seen.append((meta["normalization"], meta["postprocess"]))
        v = np.asarray(volume, np.float32)
        truth = np.where(v > 325, 1, np.where(v > 175, 2, 0)).astype(np.uint8)
        if meta["normalization"].get("outside") != "darkest":
            truth[truth == 2] = 0  # as it is, class 2 is missed
        return {"labels": truth}

    monkeypatch.setattr(inference, "predict_volume", predict)
    monkeypatch.syspath_prepend(str(BENCH))
    import folds_meta_choice

    data = write_dataset(tmp_path / "d", n=2)
    path = tmp_path / "a.pt"
    save_checkpoint(path, build_network(TINY), {**TINY, "num_classes": 3, "postprocess": "none",
                                                "normalization": {"kind": "percentile_zscore",
                                                                  "low": 0.5, "high": 99.5}})
    out = tmp_path / "meta.md"
    assert folds_meta_choice.main([
        "--data", str(data), "--fold", f"{path}=case00,case01", "--arm", "as it is={}",
        "--arm", 'air={"normalization": {"outside": "darkest"}}', "--clean-up", "per_class",
        "--out", str(out)]) == 0
    base, air = _means(out)
    assert air == pytest.approx(100.0) and base < 90.0
    assert {n.get("outside") for n, _ in seen} == {None, "darkest"}
    assert all(n["low"] == 0.5 and pp == "per_class" for n, pp in seen)
    assert "- air: its worst change on one patient +50.00" in out.read_text()
    for bad in (["--arm", "only one={}"], ["--arm", "a={}", "--arm", "b=[1]"]):
        with pytest.raises(SystemExit):
            folds_meta_choice.main(["--data", str(data), "--fold", f"{path}=case00", *bad,
                                    "--out", str(out)])

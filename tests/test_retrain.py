"""The one Retrain: its judgement, and the dock's child and the benchmark giving the same result."""

from __future__ import annotations

import numpy as np
import pytest

from napari_semiseg.retrain_job import make_job, run_retrain
from napari_semiseg.session import Session, Settings
from training.bench.simulate import simulate_case, synthetic_case, uncorrected_dice
from training.interactive.retrain import ACCEPT_TOLERANCE, judge, mean_score, score_slices


def test_a_retrain_that_does_worse_on_held_back_slices_is_rejected():
    v = judge({3: 0.8, 5: 0.6}, {3: 0.6, 5: 0.5})
    assert not v.adopted and "rejected" in v.reason
    assert v.old_score == pytest.approx(0.7) and v.new_score == pytest.approx(0.55)
    assert judge({3: 0.8}, {3: 0.79}, tolerance=0.02).adopted  # within the noise
    assert not judge({3: 0.8}, {3: 0.79}, tolerance=0.0).adopted
    assert judge({3: 0.8}, {3: 0.8 - ACCEPT_TOLERANCE / 2}).adopted  # the product's tolerance
    v = judge({}, {})
    assert v.adopted and "no held-back" in v.reason


def test_held_back_slices_without_structure_judge_by_what_each_model_paints():
    ref = np.zeros((3, 8, 8), np.uint8)  # the user painted three empty slices
    nothing, specks = np.zeros_like(ref), np.zeros_like(ref)
    specks[1, 2, 2] = 1
    assert np.isnan(score_slices(nothing, ref, [0])[0])  # nothing there, nothing found
    assert score_slices(specks, ref, [1])[1] == 0.0  # a structure where there is none
    slices = [0, 1, 2]
    paints = judge(score_slices(nothing, ref, slices), score_slices(specks, ref, slices))
    assert not paints.adopted and "left empty" in paints.reason
    cleans = judge(score_slices(specks, ref, slices), score_slices(nothing, ref, slices))
    assert cleans.adopted
    assert mean_score({0: float("nan"), 1: 0.5}) == 0.5 and mean_score({0: float("nan")}) is None


def test_the_benchmark_and_the_docks_training_process_give_the_same_result(disc_model,
                                                                         tmp_path):
    """`semiseg simulate` and the dock's Retrain run the same job through one function: the
    same held-back slices, the same new prediction, the same verdict."""
    image, truth = synthetic_case((6, 32, 32), seed=3)
    tiny = {"labeled_bs": 2, "unlabeled_bs": 2}
    row = simulate_case(image, truth, disc_model, corrections=3, strategy="even",
                        retrain_steps=3, method="supervised", seed=0, device="cpu",
                        hold_back=True, **tiny)
    # the same job in the dock: the clinician's slices painted, Retrain clicked
    s = Session(image, folder=tmp_path / "session", settings=Settings(method="supervised"))
    s.add_version(disc_model, note="starting model")
    for z in row["slices"]:
        s.mark_labelled(0, z, truth[z])
    job = make_job(s, tmp_path / "job", steps=3, preview_every=0, device="cpu", **tiny)
    assert [i for _, i in job.held_back] == row["held_back"]
    events: list[dict] = []  # the training process's target, run here (tests/test_bridge.py
    run_retrain(job, events.append, lambda: False)  # runs it in a real process)
    done = events[-1]
    assert done["type"] == "done", events
    dock = uncorrected_dice(np.load(done["prediction"]), truth, row["slices"])
    assert dock == pytest.approx(row["dice_after"], abs=1e-12)
    assert (done["adopted"], done["reason"]) == (row["adopted"], row["reason"])
    s.close()


def test_what_the_user_sees_after_a_retrain_uses_every_painted_slice_held_back_ones_too(
        disc_model, tmp_path):
    """The held-back slices judge the networks unseen, then count like every other painted slice
    in the blend the user sees: adopted or not. Left out, a held-back middle slice left only
    the two ends' thin sections to fill between."""
    from training.engine.metrics import mean_dice
    from training.interactive.loop import sparse_labels
    from training.interactive.retrain import Shown, retrain_once

    z, y, x = np.ogrid[:21, :32, :32]
    truth = (((z - 10) / 8.5) ** 2 + ((y - 16) / 10) ** 2 + ((x - 16) / 10) ** 2 <= 1)
    truth = truth.astype(np.uint8)
    # a scan that does not show the outline: only the painted slices can tell the fill
    image = np.random.default_rng(0).normal(0, 1, truth.shape).astype(np.float32)
    ends, middle = [2, 18], 10
    assert truth[ends[0]].sum() < truth[middle].sum() / 3  # the ends' sections are thin
    result = retrain_once(disc_model, image, sparse_labels(truth, ends), tmp_path / "new.pt",
                          reference=sparse_labels(truth, [middle]), held_back=[(0, middle)],
                          method="supervised", steps=2, shown=Shown(fuse_weight=0.0),
                          labeled_bs=2, unlabeled_bs=0)
    assert result is not None
    # judged unseen: with the network's share at 0 a slice in the fill scores 1 exactly
    assert result.verdict.new_scores[(0, middle)] < 0.9
    assert result.verdict.old_scores[(0, middle)] < 0.9
    between = [k for k in range(3, 18) if k != middle]
    seen = [mean_dice(shown[between], truth[between])
            for shown in (result.prediction, result.kept_prediction)]
    for shown in (result.prediction, result.kept_prediction):
        np.testing.assert_array_equal(shown[middle], truth[middle])
    ends_only = retrain_once(disc_model, image, sparse_labels(truth, ends), tmp_path / "e.pt",
                             method="supervised", steps=2, shown=Shown(fuse_weight=0.0),
                             labeled_bs=2, unlabeled_bs=0)
    assert ends_only.kept_prediction is None  # nothing held back: nothing else to show
    ends_dice = mean_dice(ends_only.prediction[between], truth[between])
    assert min(seen) > 0.7 and min(seen) > ends_dice + 0.4, (seen, ends_dice)


def test_the_uncertainty_of_what_is_shown_counts_where_the_fill_and_the_network_disagree():
    from training.interactive.loop import sparse_labels
    from training.interactive.retrain import Shown

    z, y, x = np.ogrid[:21, :32, :32]
    truth = ((y - 16) ** 2 + (x - 16) ** 2 <= 64).repeat(21, axis=0).astype(np.uint8)
    # the network is sure there is nothing; the painted slices 2 and 18 show a disc
    probs = np.stack([np.ones(truth.shape), np.zeros(truth.shape)]).astype(np.float32)
    res = {"labels": np.zeros(truth.shape, np.uint8), "probabilities": probs,
           "uncertainty": np.zeros(truth.shape, np.float32)}
    painted = sparse_labels(truth, [2, 18])
    network_only = Shown(fuse_weight=0.3, suggest_from="network")
    shown, unc = network_only.show_with_uncertainty(res, painted)
    assert unc is res["uncertainty"] and (shown == network_only.show(res, painted)).all()
    of_shown = Shown(fuse_weight=0.3, suggest_from="shown")
    shown2, unc2 = of_shown.show_with_uncertainty(res, painted)
    assert (shown2 == shown).all()  # what is shown does not change, only where it is unsure
    assert unc2[10][truth[10] == 1].min() > 0.5  # the fill says disc, the network nothing
    far = ((y - 16) ** 2 + (x - 16) ** 2 > 256)[0]  # 8 px beyond the disc: both say nothing
    assert unc2[10][far].max() < 0.1
    assert Shown(suggest_from="shown").show_with_uncertainty(res, painted)[1] is \
        res["uncertainty"]  # no blend: the network's own
    # by disagreement: the same inside the disc, nothing added on the fill's band outside it
    shown3, unc3 = Shown(fuse_weight=0.3, suggest_from="disagreement").show_with_uncertainty(
        res, painted)
    assert (shown3 == shown).all() and unc3[10][truth[10] == 1].min() > 0.5
    assert unc3[10][truth[10] == 0].max() == 0  # network and fill both say nothing there

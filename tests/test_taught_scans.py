"""Learning across scans: the painted slices of earlier scans join the next scan's Retrain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_semiseg.taught_scans import TaughtScans
from training import IGNORE_INDEX


def _painted(shape=(4, 8, 8), z=1, value=1) -> np.ndarray:
    lab = np.full(shape, IGNORE_INDEX, np.uint8)
    lab[z] = 0
    lab[z, 2:5, 2:5] = value
    return lab


def test_others_are_every_remembered_scan_but_the_one_retrained():
    t = TaughtScans(limit=2)
    img = np.zeros((4, 8, 8), np.float32)
    t.remember("a", img, _painted())
    t.remember("b", img + 1, _painted(z=2))
    assert [float(i.mean()) for i, _ in t.others("a")] == [1.0]
    assert len(t.others("c")) == 2
    lab = _painted(z=3)
    t.remember("a", img, lab)  # painted more: replaced, not doubled
    lab[3] = 9  # the copy kept does not change with the session's array
    assert len(t) == 2 and (t.others("b")[0][1][3] != 9).all()
    t.remember("c", img, _painted())  # over the limit: the oldest ("b") goes
    assert len(t) == 2 and [float(i.mean()) for i, _ in t.others("x")] == [0.0, 0.0]
    t.remember("d", img, np.full((4, 8, 8), IGNORE_INDEX, np.uint8))  # nothing painted
    assert len(t) == 2
    with pytest.raises(ValueError, match="do not match"):
        t.remember("e", img, _painted(shape=(3, 8, 8)))
    t.clear()
    assert t.others("a") == []


def test_a_retrain_job_carries_other_scans_painted_slices_to_finetune(tmp_path, monkeypatch):
    from test_bridge import _tiny_model

    from napari_semiseg.session import Session, Settings
    from napari_semiseg.training_bridge import RetrainJob, make_job, run_retrain
    from training.simulate import synthetic_case

    image, truth = synthetic_case((6, 32, 32), seed=2)
    s = Session(image, folder=tmp_path / "s", settings=Settings(method="supervised", steps=2,
                                                                 tolerance=1.0))
    s.add_version(_tiny_model(tmp_path / "base.pt"), method="pretrained")
    s.merge_prediction(np.zeros_like(truth))
    s.mark_labelled(0, 1, truth[1])
    other_image, other_truth = synthetic_case((5, 32, 32), seed=3)
    other = np.full(other_truth.shape, IGNORE_INDEX, np.uint8)
    other[2] = other_truth[2]
    job = make_job(s, tmp_path / "job", other_labelled=[(other_image, other)], steps=2,
                   labeled_bs=2, unlabeled_bs=0, device="cpu")
    job = RetrainJob(**json.loads(json.dumps(job.to_dict())))  # as the child receives it
    seen = []
    import training.loop as loop  # run_retrain imports finetune from here when it runs

    engine = loop.finetune

    def spy(*args, other_labelled=(), **kw):
        seen.append(other_labelled)
        return engine(*args, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(loop, "finetune", spy)
    events = []
    run_retrain(job, events.append, lambda: False)
    assert events[-1]["type"] == "done"
    (pairs,) = seen
    assert len(pairs) == 1
    np.testing.assert_array_equal(pairs[0][0], other_image)
    np.testing.assert_array_equal(pairs[0][1], other)

"""The dock's one job slot, without a display: one job at a time, and it says which."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_semiseg.jobs import JobSlot, JobSlotBusy, job_folder
from napari_semiseg.session import Session


def test_one_job_at_a_time_and_the_refusal_says_which(tmp_path):
    changes = []
    slot = JobSlot(on_change=lambda: changes.append(slot.busy))
    scan = Session(np.zeros((2, 4, 4), np.float32), image_path=tmp_path / "heart.nii.gz",
                   autosave=False)
    other = Session(np.zeros((2, 4, 4), np.float32), autosave=False)
    assert not slot.busy and slot.why_busy() == ""
    folder = job_folder(scan, "retrain-", tmp_path / "job")
    job = slot.start("Retrain", scan, files=SimpleNamespace(out_dir=str(folder)))
    assert job.session is scan and slot.running("Retrain") and not slot.running("Predict")
    with pytest.raises(JobSlotBusy, match="Retrain is running on heart.nii.gz"):
        slot.start("Predict", other)
    assert slot.job is job  # the refused job took nothing
    slot.finish(job)
    assert not slot.busy and not folder.exists()  # the job's scan copy is gone
    assert changes == [True, False]
    assert slot.start("Predict", other).session is other

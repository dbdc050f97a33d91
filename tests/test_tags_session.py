"""Slice tags in the session (saved and reopened) and RGB stacks as grey scans, Qt-free."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES

from napari_semiseg.io import read_volume
from napari_semiseg.session import Session, SessionError, grey_scan
from napari_semiseg.weak_job import make_weak_job

LGG = SAMPLES / "lgg/TCGA_CS_4941_19960909/images"


def test_tags_are_saved_and_reopened(tmp_path):
    s = Session(np.zeros((5, 8, 8), np.int16), folder=tmp_path / "s")
    s.tag_slice(1, 1)
    s.tag_slice(3, 0)
    s.tag_slice(4, 1)
    s.tag_slice(4, None)  # untag
    assert s.tag_array().tolist() == [-1, 1, -1, 0, -1]
    with pytest.raises(SessionError):
        s.tag_slice(2, 7)
    with pytest.raises(IndexError):
        s.tag_slice(9, 1)
    back = Session.open(tmp_path / "s", autosave=False)  # autosaved
    assert back.tags == {1: 1, 3: 0}


def test_lgg_rgb_stack_becomes_its_flair_channel(tmp_path):
    vol = read_volume(LGG)
    assert vol.rgb
    s = Session.from_file(LGG, folder=tmp_path / "s")
    assert s.image.shape == (23, 256, 256)
    np.testing.assert_array_equal(s.image, vol.data[..., 1])
    np.testing.assert_array_equal(grey_scan(vol.data, True), vol.data[..., 1])
    s.tag_slice(12, 1)
    s.save()
    back = Session.open(tmp_path / "s", autosave=False)  # the scan is re-read
    assert back.image.shape == (23, 256, 256) and back.tags == {12: 1}


def test_weak_job_needs_both_kinds_of_tags(tmp_path):
    s = Session(np.zeros((4, 8, 8), np.int16), folder=None)
    s.tag_slice(0, 1)
    with pytest.raises(SessionError, match="one 'no structure'"):
        make_weak_job(s, tmp_path / "job")
    s.tag_slice(1, 0)
    job = make_weak_job(s, tmp_path / "job", steps=3)
    assert job.tags == [1, 0, -1, -1] and job.size == [8, 8]
    assert (np.load(job.labels) == 255).all()

"""Tag files: case,slice,tag CSVs and the LGG / ACDC adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.core.io import DataError
from training.weak.tags import UNTAGGED, read_tags, tag_counts, volume_tags, write_tags

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_roundtrip_and_volume_tags(tmp_path):
    tags = {("a", 0): 1, ("a", 2): 0, ("b", 0): 1}
    write_tags(tmp_path / "t.csv", tags)
    back = read_tags(tmp_path / "t.csv")
    assert back == tags
    assert volume_tags(back, "a", 4).tolist() == [1, UNTAGGED, 0, UNTAGGED]
    assert tag_counts(back) == {"positive": 2, "negative": 1}
    with pytest.raises(DataError):
        volume_tags(back, "a", 2)


def test_bad_files(tmp_path):
    (tmp_path / "bad.csv").write_text("case,slice,tag\na,0,maybe\n")
    with pytest.raises(DataError, match="not 0/1"):
        read_tags(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="case,slice,tag"):
        read_tags(tmp_path / "cols.csv")
    with pytest.raises(DataError, match="not found"):
        read_tags(tmp_path / "missing.csv")


def test_lgg_and_acdc_adapters(tmp_path):
    (tmp_path / "index.csv").write_text(
        "image,mask,patient,slice,has_tumor,tumor_pixels\n"
        "images/P_001.png,masks/P_001.png,P,1,0,0\nimages/P_002.png,masks/P_002.png,P,2,1,40\n")
    assert read_tags(tmp_path / "index.csv") == {("P_001", 0): 0, ("P_002", 0): 1}
    (tmp_path / "slices.csv").write_text(
        "case,z,has_RV,has_Myo,has_LV,has_any\np1,0,0,0,0,0\np1,1,1,0,1,1\n")
    assert read_tags(tmp_path / "slices.csv") == {("p1", 0): 0, ("p1", 1): 1}
    assert read_tags(tmp_path / "slices.csv", column="has_Myo")[("p1", 1)] == 0


@pytest.mark.skipif(not (DATA / "lgg_brain_mri_2d" / "index.csv").exists(), reason="no LGG data")
def test_real_lgg_index_counts():
    counts = tag_counts(read_tags(DATA / "lgg_brain_mri_2d" / "index.csv"))
    # 40 patients: the first 10 (150 positive, 210 negative slices) and 30 added in December
    assert counts == {"positive": 481, "negative": 898}

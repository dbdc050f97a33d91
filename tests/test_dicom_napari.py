"""The clinical round trip as a napari user meets it (under Xvfb): open a DICOM series, save
the labels as a DICOM-SEG, open that SEG onto its series with names and colours."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotated_direction, write_dicom_series
from napari.layers import Image, Labels
from test_training_synth import blob_volume

import napari_semiseg._reader as reader_module
from training.core.palette import class_color

pytestmark = pytest.mark.gui
PLUGIN = "napari-semiseg"
NAMES = ["background", "left ventricle", "scar"]


@pytest.fixture
def series(tmp_path):
    image, _ = blob_volume(0, (6, 32, 40))
    write_dicom_series(tmp_path / "series", image, direction=rotated_direction())
    return tmp_path / "series", image


def _mask(shape) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 8:20, 6:18] = 1
    lab[2, 20:26, 22:30] = 2
    lab[5, :3, :3] = 255
    return lab


def test_series_to_dicom_seg_and_back_onto_the_series(make_napari_viewer, series, tmp_path):
    hd = pytest.importorskip("highdicom")
    folder, image = series
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(folder), plugin=PLUGIN)
    assert isinstance(scan, Image)
    np.testing.assert_array_equal(scan.data, image)
    lab = _mask(image.shape)
    mask = viewer.add_labels(lab, scale=scan.scale, translate=scan.translate,
                             metadata=dict(scan.metadata), name="prediction",
                             features={"index": [0, 1, 2], "name": NAMES})
    out = tmp_path / "mask.dcm"
    assert mask.save(str(out), plugin=PLUGIN) == [str(out)]

    seg = hd.seg.segread(str(out))  # what PACS, Slicer or OHIF will find in it
    assert [seg.get_segment_description(k).segment_label for k in seg.segment_numbers] == \
        NAMES[1:]
    assert seg.SegmentationType == "BINARY"

    (opened,) = viewer.open(str(out), plugin=PLUGIN)
    assert isinstance(opened, Labels)
    np.testing.assert_array_equal(opened.data, np.where(lab == 255, 0, lab))
    np.testing.assert_allclose(opened.scale, scan.scale)
    np.testing.assert_allclose(opened.translate, scan.translate)
    assert list(opened.features["name"]) == NAMES
    rgba = opened.colormap.map(np.array([1, 2]))
    for value, got in zip((1, 2), rgba, strict=True):
        want = [int(class_color(value)[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        np.testing.assert_allclose(got[:3], want, atol=0.02)


def test_a_seg_whose_series_is_not_open_is_refused(make_napari_viewer, series, tmp_path):
    pytest.importorskip("highdicom")
    folder, image = series
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(folder), plugin=PLUGIN)
    mask = viewer.add_labels(_mask(image.shape), metadata=dict(scan.metadata))
    out = tmp_path / "mask.dcm"
    mask.save(str(out), plugin=PLUGIN)
    viewer.layers.clear()
    with pytest.raises(Exception, match="mask.dcm.*not open"):
        viewer.open(str(out), plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_saving_a_dicom_seg_needs_a_dicom_scan(make_napari_viewer, tmp_path, disc_scan):
    pytest.importorskip("highdicom")
    image, label = disc_scan
    src = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(image), str(src))
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(src), plugin=PLUGIN)
    mask = viewer.add_labels(label, metadata=dict(scan.metadata), name="mask")
    with pytest.raises(Exception, match="mask.dcm.*DICOM series.*nii"):
        mask.save(str(tmp_path / "mask.dcm"), plugin=PLUGIN)
    assert not (tmp_path / "mask.dcm").exists()


def test_a_folder_of_several_series_asks_which_one(make_napari_viewer, tmp_path, monkeypatch):
    folder = tmp_path / "two"
    write_dicom_series(folder, blob_volume(0, (6, 32, 40))[0], description="T1 AX",
                       uid="1.2.826.0.1.3680043.2.1125.1.11")
    write_dicom_series(folder, blob_volume(1, (4, 24, 24))[0], description="T2 COR",
                       uid="1.2.826.0.1.3680043.2.1125.1.12")
    asked = []

    def choose(where, found):
        asked.append([s.label() for s in found])
        return next(s for s in found if s.description == "T2 COR")

    monkeypatch.setattr(reader_module, "choose_series", choose)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin=PLUGIN)
    assert layer.data.shape == (4, 24, 24)
    assert asked == [["'T1 AX': 6 slices of 32x40 MR, series 3",
                      "'T2 COR': 4 slices of 24x24 MR, series 3"]]
    monkeypatch.setattr(reader_module, "choose_series", lambda where, found: None)
    with pytest.raises(Exception, match="no series chosen"):
        viewer.open(str(folder), plugin=PLUGIN)
    assert len(viewer.layers) == 1


def test_one_file_of_a_series_opens_the_series(make_napari_viewer, series):
    folder, image = series
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(sorted(folder.iterdir())[2]), plugin=PLUGIN)
    np.testing.assert_array_equal(layer.data, image)

"""The clinical round trip without a display: a DICOM series in, a DICOM-SEG out (issue 28).

Series are written here with SimpleITK (``conftest.write_dicom_series``); every SEG is read
back with highdicom itself, not only with our reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import rotated_direction, write_dicom_series
from test_training_synth import blob_volume, write_dataset

from training.cli import main
from training.core.dicom_seg import Segment, read_seg, segments_for
from training.core.io import (
    DataError,
    VolumeReadError,
    WriteError,
    read_image,
    read_labels,
    read_volume,
    write_volume,
)
from training.core.palette import class_color

NAMES = ["background", "RV", "Myo", "LV"]
TINY = ["--size", "16", "16", "--base", "4", "--depth", "2", "--labeled-bs", "2",
        "--device", "cpu"]


def _series(folder: Path, shape=(6, 32, 40), **kw) -> tuple[Path, np.ndarray]:
    image, _ = blob_volume(0, shape)
    kw.setdefault("direction", rotated_direction())
    write_dicom_series(folder, image, **kw)
    return folder, image


def _labels(shape=(6, 32, 40)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 10:20, 5:15] = 1
    lab[2:5, 20:28, 20:30] = 2
    lab[3, 2:6, 30:36] = 3
    lab[5, :4, :4] = 255  # not annotated: never a segment
    return lab


def _sop_uids(files: list[str]) -> list[str]:
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]


def test_seg_round_trip_read_back_with_highdicom(tmp_path):
    hd = pytest.importorskip("highdicom")
    folder, image = _series(tmp_path / "series")
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.data, image)
    lab = _labels()
    out = tmp_path / "out" / "mask.dcm"
    write_volume(out, lab, vol.geometry, segments_for(lab, NAMES))
    assert [p.name for p in out.parent.iterdir()] == ["mask.dcm"], "no temporary file is left"

    seg = hd.seg.segread(str(out))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == \
        [vol.extra["dicom_series"]]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))  # the scan's slice order
    back = seg.get_pixels_by_source_instance(_sop_uids(files), combine_segments=True)
    expected = np.where(lab == 255, 0, lab)
    np.testing.assert_array_equal(back, expected)  # voxel for voxel, on each source slice
    assert [seg.get_segment_description(k).segment_label for k in seg.segment_numbers] == \
        NAMES[1:]
    for k in seg.segment_numbers:  # the structures' colours, as the plugin shows them
        rgb = hd.color.CIELabColor.from_dicom_value(
            seg.get_segment_description(k).RecommendedDisplayCIELabValue).to_rgb()
        want = [int(class_color(k)[i:i + 2], 16) for i in (1, 3, 5)]
        assert np.allclose(rgb, want, atol=2)
    # same geometry: every frame lies on its source slice, with the series' orientation/spacing
    src = [sitk.ReadImage(f) for f in files]
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, (0.8, 0.7))
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               np.reshape(rotated_direction(), (3, 3))[:, :2].T.ravel(),
                               atol=1e-5)
    uid_of = dict(zip(_sop_uids(files), range(len(files)), strict=True))
    for frame in seg.PerFrameFunctionalGroupsSequence:
        k = uid_of[frame.DerivationImageSequence[0].SourceImageSequence[0]
                   .ReferencedSOPInstanceUID]
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient,
                                   src[k].GetOrigin(), atol=1e-4)
    # and through the project's reader, onto the scan or on its own frames
    onto, _ = read_labels(out, like=(vol.data.shape, vol.geometry))
    np.testing.assert_array_equal(onto, expected)
    alone, geom = read_labels(out)
    np.testing.assert_array_equal(alone, expected)
    np.testing.assert_allclose(geom.origin, vol.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(geom.direction, vol.geometry.direction, atol=1e-5)
    np.testing.assert_allclose(geom.spacing, vol.geometry.spacing, rtol=1e-5)


def test_not_annotated_is_never_a_segment(tmp_path):
    pytest.importorskip("highdicom")
    folder, _ = _series(tmp_path / "series")
    vol = read_volume(folder)
    lab = np.full(vol.data.shape, 255, np.uint8)
    lab[2, 5:9, 5:9] = 1
    assert [s.value for s in segments_for(lab)] == [1]
    out = tmp_path / "sparse.dcm"
    write_volume(out, lab, vol.geometry, segments_for(lab))
    seg = read_seg(out, vol.data.shape, vol.geometry)
    assert [s.value for s in seg.segments] == [1]
    np.testing.assert_array_equal(seg.data, np.where(lab == 255, 0, lab))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny 3-class model that paints the blobs (class names stored in the checkpoint)."""
    root = tmp_path_factory.mktemp("model")
    data = write_dataset(root / "data", n=4)
    out = root / "m.pt"
    assert main(["train", "--data", str(data), "--method", "supervised", "--labeled", "2",
                 "--dims", "2d", "--steps", "60", "--lr", "0.01", "--out", str(out),
                 "--class-names", "background,disc,square", *TINY]) == 0
    return out


def test_predict_a_series_to_dicom_seg_and_evaluate_it(model, tmp_path, capsys):
    hd = pytest.importorskip("highdicom")
    folder, _ = _series(tmp_path / "series", shape=(4, 32, 32))
    nii, dcm = tmp_path / "pred.nii.gz", tmp_path / "pred.dcm"
    for out in (nii, dcm):  # the folder of one series is one scan, not a folder of scans
        assert main(["predict", "--model", str(model), "--input", str(folder), "--output",
                     str(out), "--device", "cpu"]) == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(nii)))
    assert len(np.unique(labels)) > 1, "the model paints something: the test means something"
    ref = read_volume(folder).geometry
    back = sitk.ReadImage(str(nii))
    np.testing.assert_allclose(back.GetDirection(), ref.direction, atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), ref.origin, atol=1e-4)

    seg = hd.seg.segread(str(dcm))
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    np.testing.assert_array_equal(
        seg.get_pixels_by_source_instance(_sop_uids(files), combine_segments=True), labels)
    assert [seg.get_segment_description(k).segment_label for k in seg.segment_numbers] == \
        ["disc", "square"]
    assert seg.SegmentationType == "BINARY"

    truth = tmp_path / "truth" / "pred.nii.gz"  # evaluate pairs files by case name
    truth.parent.mkdir()
    sitk.WriteImage(back, str(truth))
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--pred", str(dcm), "--labels", str(truth), "--json",
                 str(report)]) == 0
    res = json.loads(report.read_text(encoding="utf-8"))
    assert all(d == 1.0 for d in res["mean"]["dice"] if d is not None)


def _error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and err.startswith("semiseg: error:") and "Traceback" not in err
    return err


def test_dicom_seg_output_needs_a_dicom_series(model, tmp_path, capsys):
    nii = write_dataset(tmp_path / "data", n=1, with_index=False) / "images" / "case00.nii.gz"
    out = tmp_path / "out" / "x.dcm"
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(nii), "--output",
                          str(out), "--device", "cpu"])
    assert "DICOM series" in err and str(nii.parent) in err
    folder, _ = _series(tmp_path / "series", shape=(4, 32, 32))
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(folder), "--output",
                          str(tmp_path / "out" / "ok.nii.gz"), "--uncertainty",
                          str(tmp_path / "out" / "unc.dcm"), "--device", "cpu"])
    assert "unc.dcm" in err and "labels only" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), \
        "nothing is written before the inputs and outputs are known to be right"


def test_train_and_predict_take_series_folders(tmp_path, capsys):
    pytest.importorskip("highdicom")
    root = tmp_path / "data"
    truth = {}
    for i in range(3):
        image, lab = blob_volume(i, (4, 32, 32))
        folder = root / "images" / f"case{i}"
        write_dicom_series(folder, image, uid=f"1.2.826.0.1.3680043.2.1125.1.{i + 1}")
        truth[f"case{i}"] = lab
    (root / "labels").mkdir()
    geom = read_volume(root / "images" / "case0").geometry
    write_volume(root / "labels" / "case0.dcm", truth["case0"], geom,
                 segments_for(truth["case0"], ["background", "disc", "square"]))
    lab1 = sitk.GetImageFromArray(truth["case1"])
    lab1.CopyInformation(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(
        str(root / "images" / "case1"))))
    sitk.WriteImage(lab1, str(root / "labels" / "case1.nii.gz"))
    model = tmp_path / "m.pt"
    assert main(["train", "--data", str(root), "--method", "supervised", "--labeled", "2",
                 "--dims", "2d", "--steps", "2", "--out", str(model), *TINY]) == 0
    assert not list(root.glob("index.csv")), "the user's dataset folder is left as it was"
    from training.engine.checkpoint import load_checkpoint

    meta = load_checkpoint(model)[1]
    assert meta["data"]["labeled_volumes"] == 2 and meta["data"]["unlabeled_volumes"] == 1
    # a folder of series folders: one prediction per series
    assert main(["predict", "--model", str(model), "--input", str(root / "images"),
                 "--output", str(tmp_path / "preds"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == \
        ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]
    # evaluate: DICOM-SEG labels against those predictions, by case name
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "preds"), "--labels",
                 str(root / "labels")]) == 0
    out = capsys.readouterr().out
    assert "case0 dice" in out and "case1 dice" in out


# ----- several series, and series that are not one regular stack ------------------------------


def _two_series(folder: Path) -> None:
    write_dicom_series(folder, blob_volume(0, (6, 32, 40))[0], description="T1 AX", number=3,
                       uid="1.2.826.0.1.3680043.2.1125.1.11")
    write_dicom_series(folder, blob_volume(1, (4, 24, 24))[0], description="T2 COR", number=7,
                       uid="1.2.826.0.1.3680043.2.1125.1.12")


def test_a_folder_of_several_series_is_one_scan_only_once_chosen(tmp_path, model, capsys):
    folder = tmp_path / "two"
    _two_series(folder)
    with pytest.raises(VolumeReadError, match=r"2 DICOM series.*'T1 AX': 6 slices of 32x40.*"
                                              r"'T2 COR': 4 slices of 24x24"):
        read_volume(folder)
    for choice in ("T2 COR", "t2 cor", "7", "1.2.826.0.1.3680043.2.1125.1.12.2"):
        assert read_image(folder, series=choice)[0].shape == (4, 24, 24)
    assert read_image(folder, series="1")[0].shape == (6, 32, 40)  # first in the listing
    with pytest.raises(VolumeReadError, match="no DICOM series 'FLAIR'.*T1 AX.*T2 COR"):
        read_volume(folder, series="FLAIR")
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(folder),
                          "--output", str(tmp_path / "p.nii.gz"), "--device", "cpu"])
    assert "--series" in err and "T2 COR" in err
    assert main(["predict", "--model", str(model), "--input", str(folder), "--series",
                 "T2 COR", "--output", str(tmp_path / "p.nii.gz"), "--device", "cpu"]) == 0
    assert sitk.ReadImage(str(tmp_path / "p.nii.gz")).GetSize() == (24, 24, 4)


def test_a_seg_beside_its_series_is_not_a_second_series(tmp_path):
    pytest.importorskip("highdicom")
    folder, image = _series(tmp_path / "series")
    vol = read_volume(folder)
    write_volume(folder / "mask.dcm", _labels(), vol.geometry)
    np.testing.assert_array_equal(read_volume(folder).data, image)


@pytest.mark.parametrize("depths, culprit, reason", [
    ([0.0, 2.5, 5.0, 10.0, 12.5], 3, "missing"),  # slice 3 of 6 is gone
    ([0.0, 2.5, 5.0, 8.5, 10.0], 3, "uneven"),
    ([0.0, 2.5, 2.5, 5.0, 7.5], 2, "same position"),
])
def test_missing_or_uneven_slices_are_refused_naming_the_file(tmp_path, depths, culprit,
                                                              reason):
    image, _ = blob_volume(0, (len(depths), 16, 16))
    files = write_dicom_series(tmp_path / "s", image, depths=depths)
    with pytest.raises(VolumeReadError, match=reason) as info:
        read_volume(tmp_path / "s")
    assert str(files[culprit]) in str(info.value)


# ----- bad input: nothing written half-way -----------------------------------------------------


def test_seg_of_another_series_or_grid_is_refused(tmp_path):
    pytest.importorskip("highdicom")
    folder, _ = _series(tmp_path / "a")
    vol = read_volume(folder)
    seg = tmp_path / "a.dcm"
    write_volume(seg, _labels(), vol.geometry, segments_for(_labels(), NAMES))
    with pytest.raises(DataError, match="a.dcm.*belongs to series .*not to the scan's series X"):
        read_seg(seg, vol.data.shape, vol.geometry, series_uid="X")
    g = vol.geometry
    shifted = type(g)(g.spacing, (g.origin[0] + 0.35, *g.origin[1:]), g.direction, g.source)
    with pytest.raises(DataError, match="a.dcm.*do not match the scan's geometry"):
        read_labels(seg, like=(vol.data.shape, shifted))
    with pytest.raises(DataError, match="a.dcm.*lie outside the scan"):
        read_labels(seg, like=((3, 32, 40), g))  # slices 3..5 carry segments
    with pytest.raises(VolumeReadError, match="a.dcm.*DICOM-SEG.*not a scan"):
        read_image(seg)


def test_a_seg_made_elsewhere_opens_onto_its_series(tmp_path):
    """highdicom's defaults, as other tools write: empty frames left out, and the source's
    Spacing Between Slices copied (GDCM wrote 1 mm where the slices are 2.5 mm apart)."""
    hd = pytest.importorskip("highdicom")
    import pydicom
    from pydicom.sr.codedict import codes

    folder, _ = _series(tmp_path / "series")
    vol = read_volume(folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    lab = np.zeros(vol.data.shape, np.uint8)
    lab[1, 3:9, 3:9] = 1
    lab[4, 10:20, 10:20] = 1
    algo = hd.AlgorithmIdentificationSequence(name="other", version="1",
                                              family=codes.cid7162.ArtificialIntelligence)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=lab, segmentation_type="BINARY",
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="lesion", segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type="AUTOMATIC",
            algorithm_identification=algo)],
        series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="other", manufacturer_model_name="other",
        software_versions="1", device_serial_number="1")
    assert seg.NumberOfFrames == 2
    seg.save_as(str(tmp_path / "other.dcm"))
    back = read_seg(tmp_path / "other.dcm", vol.data.shape, vol.geometry,
                    series_uid=vol.extra["dicom_series"])
    np.testing.assert_array_equal(back.data, lab)
    assert back.names() == ["background", "lesion"]


def test_a_failed_seg_write_leaves_the_old_file(tmp_path, monkeypatch):
    pytest.importorskip("highdicom")
    import training.core.dicom_seg as dicom_seg

    folder, _ = _series(tmp_path / "series")
    vol = read_volume(folder)
    target = tmp_path / "out" / "mask.dcm"
    target.parent.mkdir()
    target.write_bytes(b"previous")

    def broken_read_back(*a, **k):
        raise DataError("disk full")

    monkeypatch.setattr(dicom_seg, "read_seg", broken_read_back)
    with pytest.raises(WriteError, match="mask.dcm.*previous file"):
        write_volume(target, _labels(), vol.geometry)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in target.parent.iterdir()] == ["mask.dcm"]
    monkeypatch.undo()
    nii_geom = read_volume(write_dataset(tmp_path / "d", n=1, with_index=False)
                           / "images" / "case00.nii.gz").geometry
    with pytest.raises(DataError, match="DICOM series folder is not there|no DICOM series"):
        write_volume(tmp_path / "out" / "x.dcm", np.zeros((4, 32, 32), np.uint8), nii_geom)
    assert not (tmp_path / "out" / "x.dcm").exists()
    with pytest.raises(DataError, match="label values 0..254"):
        write_volume(tmp_path / "out" / "f.dcm", np.full(vol.data.shape, 0.5), vol.geometry)


def test_without_highdicom_the_error_says_how_to_install(tmp_path, monkeypatch, capsys, model):
    folder, _ = _series(tmp_path / "series", shape=(4, 32, 32))
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    vol = read_volume(folder)  # a plain series needs no highdicom
    with pytest.raises(DataError, match=r"highdicom.*pip install"):
        write_volume(tmp_path / "x.dcm", np.zeros(vol.data.shape, np.uint8), vol.geometry,
                     [Segment(1, "a")])
    err = _error(capsys, ["predict", "--model", str(model), "--input", str(folder), "--output",
                          str(tmp_path / "x.dcm"), "--device", "cpu"])
    assert "pip install" in err
    assert not (tmp_path / "x.dcm").exists()

"""Reading and writing scans keeps their geometry; bad input gets a clear error (no display)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SAMPLES, rotated_direction

from napari_semiseg._reader import napari_get_reader, read_layers
from napari_semiseg._writer import write_labels
from napari_semiseg.io import (
    Geometry,
    LabelShapeError,
    VolumeReadError,
    check_labels_fit,
    looks_like_label_path,
    read_volume,
    write_volume,
)

SPACING = (0.6, 0.75, 3.2)  # strongly anisotropic, as real MRI
ORIGIN = (-12.5, 40.25, 7.0)


def _geometry() -> Geometry:
    return Geometry(spacing=SPACING, origin=ORIGIN, direction=rotated_direction())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_scan_round_trip_keeps_geometry(tmp_path, disc_scan, suffix):
    image, _ = disc_scan
    path = tmp_path / f"scan{suffix}"
    img = sitk.GetImageFromArray(image)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(rotated_direction())
    sitk.WriteImage(img, str(path))

    vol = read_volume(path)
    assert not vol.is_labels
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.geometry.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(vol.geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(vol.geometry.direction, rotated_direction(), atol=1e-6)
    # napari's (z, y, x) order
    assert vol.geometry.scale == pytest.approx(SPACING[::-1])
    assert vol.geometry.translate == pytest.approx(ORIGIN[::-1], abs=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_saved_mask_lies_on_the_scan(tmp_path, disc_scan, suffix):
    """Writer output read back by plain SimpleITK has the scan's physical geometry."""
    _, label = disc_scan
    out = tmp_path / f"mask{suffix}"
    write_labels(str(out), label, {"metadata": {"geometry": _geometry().to_dict()}})

    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), label)
    np.testing.assert_allclose(back.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), rotated_direction(), atol=1e-6)
    # The same voxel maps to the same physical point in scan and mask
    ref = write_volume(tmp_path / f"ref{suffix}", label, _geometry())
    p_mask = back.TransformIndexToPhysicalPoint((3, 4, 5))
    p_ref = sitk.ReadImage(ref).TransformIndexToPhysicalPoint((3, 4, 5))
    np.testing.assert_allclose(p_mask, p_ref, atol=1e-4)
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"


def test_writer_without_source_geometry_uses_layer_scale(tmp_path, disc_scan):
    _, label = disc_scan
    out = tmp_path / "m.nii.gz"
    write_labels(str(out), label, {"scale": (3.0, 0.5, 0.25), "translate": (1.0, 2.0, 3.0)})
    back = sitk.ReadImage(str(out))
    np.testing.assert_allclose(back.GetSpacing(), (0.25, 0.5, 3.0))
    np.testing.assert_allclose(back.GetOrigin(), (3.0, 2.0, 1.0))


def test_label_maps_are_recognised_by_name_and_dtype(tmp_path, disc_scan):
    image, label = disc_scan
    label = label.copy()
    label[0] = 255  # not annotated
    for name in ["labels/case.nii.gz", "case_seg.nrrd", "masks/case.mha"]:
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(label), str(p))
        vol = read_volume(p)
        assert vol.is_labels and vol.data.dtype == np.uint8
        assert (vol.data[0] == 255).all()
    float_in_label_folder = tmp_path / "labels" / "float.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.float32)), str(float_in_label_folder))
    assert not read_volume(float_in_label_folder).is_labels
    assert not looks_like_label_path("images/patient001_frame01.nii.gz")
    assert not looks_like_label_path("images/message.nii.gz")  # "mask" inside a word is no hint


def test_dicom_series_folder(dicom_folder, disc_scan):
    image, _ = disc_scan
    assert napari_get_reader(str(dicom_folder)) is not None
    vol = read_volume(dicom_folder)
    np.testing.assert_array_equal(vol.data, image)
    np.testing.assert_allclose(vol.geometry.spacing, (0.7, 0.8, 2.5), rtol=1e-5)
    np.testing.assert_allclose(vol.geometry.origin, (10, -20, 30), atol=1e-4)


def test_png_slice_folder_stacks_in_natural_order(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for k in [1, 2, 10]:  # natural order: 1, 2, 10 (not 1, 10, 2)
        sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 9), k, np.uint8)),
                        str(folder / f"case_{k}.png"))
    vol = read_volume(folder)
    assert vol.data.shape == (3, 8, 9)
    assert [int(vol.data[i, 0, 0]) for i in range(3)] == [1, 2, 10]


def test_lgg_sample_opens_as_rgb_stack_and_masks_as_labels():
    images = read_volume(SAMPLES / "lgg/TCGA_CS_4941_19960909/images")
    masks = read_volume(SAMPLES / "lgg/TCGA_CS_4941_19960909/masks")
    assert images.rgb and images.data.shape == (23, 256, 256, 3)
    assert masks.is_labels and masks.data.shape == (23, 256, 256)
    assert set(np.unique(masks.data)) <= {0, 1}


def test_2d_png_opens(tmp_path):
    p = tmp_path / "one.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(20, dtype=np.uint8).reshape(4, 5)), str(p))
    vol = read_volume(p)
    assert vol.data.shape == (4, 5) and len(vol.geometry.scale) == 2


# ---- bad input: a clear message naming the file, never a crash ---------------------------------


def test_truncated_file(tmp_path):
    src = (SAMPLES / "acdc/patient001_frame01.nii.gz").read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(src[: len(src) // 3])
    with pytest.raises(VolumeReadError, match="truncated.nii.gz"):
        read_volume(bad)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "noise.nrrd"
    bad.write_bytes(b"this is not an nrrd header\n" + bytes(range(256)) * 4)
    with pytest.raises(VolumeReadError, match="noise.nrrd.*(corrupt|truncated)"):
        read_volume(bad)
    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    with pytest.raises(VolumeReadError, match="empty"):
        read_volume(empty)
    gz = tmp_path / "bad.nii.gz"
    gz.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(VolumeReadError, match="bad.nii.gz"):
        read_volume(gz)


def test_unknown_extension_is_declined(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    assert napari_get_reader(str(p)) is None
    assert napari_get_reader([str(p), str(p)]) is None
    other = tmp_path / "other_files"
    other.mkdir()
    (other / "a.csv").write_text("x")
    assert napari_get_reader(str(other)) is None


@pytest.mark.parametrize("ndim", [4, 5])
def test_4d_and_5d_volumes_are_refused(tmp_path, ndim):
    arr = np.zeros((2,) * (ndim - 3) + (3, 4, 5), np.float32)
    p = tmp_path / f"series{ndim}d.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(p))
    what = "a time series of 2 time points" if ndim == 4 else f"{ndim}-D"
    with pytest.raises(VolumeReadError, match=what):
        read_volume(p)


def test_one_time_point_of_a_cine_reads_as_a_3d_scan_with_its_geometry(tmp_path):
    from training.core.io import TimeSeriesError

    cine = np.stack([np.full((3, 4, 5), t, np.float32) + np.arange(5) for t in range(6)])
    img = sitk.GetImageFromArray(cine, isVector=False)  # (x, y, z, t) = (5, 4, 3, 6)
    img.SetSpacing((1.25, 1.5, 8.0, 30.0))
    img.SetOrigin((-10.0, 20.0, 5.0, 0.0))
    p = tmp_path / "patient001_4d.nii.gz"
    sitk.WriteImage(img, str(p))
    with pytest.raises(TimeSeriesError, match="6 time points") as err:
        read_volume(p)
    assert err.value.time_points == 6
    vol = read_volume(p, time_point=4)  # from 1, as the user counts
    np.testing.assert_array_equal(vol.data, cine[3])
    assert vol.geometry.spacing == (1.25, 1.5, 8.0)
    assert vol.geometry.origin == (-10.0, 20.0, 5.0)
    assert vol.geometry.source == ""  # not a file of its own: a session keeps its copy
    assert vol.name == "patient001_4d t=4"
    for bad in (0, 7):
        with pytest.raises(VolumeReadError, match="time points 1 to 6"):
            read_volume(p, time_point=bad)
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(cine[0]), str(flat))
    with pytest.raises(VolumeReadError, match="not a time series"):
        read_volume(flat, time_point=1)


def test_nan_and_inf_voxels_are_refused(tmp_path):
    arr = np.ones((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    arr[0, 0, 0] = np.inf
    p = tmp_path / "nan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    with pytest.raises(VolumeReadError, match="2 voxels are NaN or Inf"):
        read_volume(p)


def test_empty_dicom_folder(tmp_path):
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    reader = napari_get_reader(str(folder))
    assert reader is not None, "an empty folder must be answered with a reason, not 'no reader'"
    with pytest.raises(VolumeReadError, match="no DICOM series"):
        reader(str(folder))


def test_png_slices_of_different_sizes(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(folder / "a1.png"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.uint8)), str(folder / "a2.png"))
    with pytest.raises(VolumeReadError, match="differ in size"):
        read_volume(folder)


def test_label_shape_mismatch_names_both_shapes():
    with pytest.raises(LabelShapeError, match=r"\(5, 32, 40\).*\(6, 32, 40\)"):
        check_labels_fit((5, 32, 40), (6, 32, 40))
    check_labels_fit((6, 32, 40), (6, 32, 40))


def test_writer_refuses_wrong_dimension_geometry(tmp_path, disc_scan):
    _, label = disc_scan
    g2d = Geometry.identity(2)
    with pytest.raises(LabelShapeError, match="3-D but its scan geometry is 2-D"):
        write_volume(tmp_path / "x.nii.gz", label, g2d)
    with pytest.raises(ValueError, match="save as one of"):
        write_volume(tmp_path / "x.tif", label, None)


def test_read_layers_gives_napari_layer_data():
    (data, kwargs, kind), = read_layers(str(SAMPLES / "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz"))
    assert kind == "image" and data.shape == (88, 132, 175)
    assert kwargs["scale"] == pytest.approx((0.625, 0.625, 0.625))
    assert Path(kwargs["metadata"]["geometry"]["source"]).name == "UPT6DX9IQY9JAZ7HJKA7.nii.gz"

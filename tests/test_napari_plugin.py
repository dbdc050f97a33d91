"""The plugin as a napari user meets it: Open, Open Sample, Save (under Xvfb)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ROOT, SAMPLES, rotated_direction
from napari.layers import Image, Labels

from napari_semiseg.io import NOT_ANNOTATED

pytestmark = pytest.mark.gui
PLUGIN = "napari-semiseg"


def test_manifest_validates():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", PLUGIN],
                         capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_plugin_is_registered_with_napari():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert {s.key for s in manifest.contributions.sample_data} == {"acdc", "left_atrium", "lgg"}
    assert manifest.contributions.readers and manifest.contributions.writers


@pytest.mark.parametrize(
    "relpath, kind, shape, scale",
    [
        ("acdc/patient001_frame01.nii.gz", Image, (10, 256, 216), (1, 1, 1)),
        ("acdc/patient001_frame01_labels.nii.gz", Labels, (10, 256, 216), (1, 1, 1)),
        ("left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz", Image, (88, 132, 175), (0.625,) * 3),
        ("left_atrium/UPT6DX9IQY9JAZ7HJKA7_labels.nii.gz", Labels, (88, 132, 175), (0.625,) * 3),
        ("lgg/TCGA_CS_4941_19960909/images", Image, (23, 256, 256, 3), (1, 1, 1)),
        ("lgg/TCGA_CS_4941_19960909/masks", Labels, (23, 256, 256), (1, 1, 1)),
    ],
)
def test_open_each_sample_file(make_napari_viewer, relpath, kind, shape, scale):
    viewer = make_napari_viewer()
    layers = viewer.open(str(SAMPLES / relpath), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert isinstance(layer, kind)
    assert layer.data.shape == shape
    np.testing.assert_allclose(layer.scale, scale)
    np.testing.assert_allclose(layer.translate, [0, 0, 0])
    assert "geometry" in layer.metadata
    # named after the scan: a folder called "images" or "masks" takes its patient's name too
    patient = relpath.split("/")[1]
    expected = (f"{patient} {relpath.split('/')[-1]}" if relpath.startswith("lgg")
                else relpath.split("/")[-1].removesuffix(".nii.gz"))
    assert layer.name == expected


def test_open_sample_menu_entries(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "acdc")
    assert [type(ly) for ly in layers] == [Image, Labels]
    assert layers[0].data.shape == layers[1].data.shape
    assert set(np.unique(layers[1].data)) == {0, 1, 2, 3}


def test_a_scan_opens_windowed_on_its_anatomy_not_on_a_few_bright_voxels(make_napari_viewer):
    # the real left-atrium sample: 99.5 % of its voxels lie at or under 33, its maximum is 65;
    # windowed to the maximum, as napari fits by itself, the atrium showed dark
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(SAMPLES / "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz"),
                           plugin=PLUGIN)
    lo, hi = layer.contrast_limits
    data = np.asarray(layer.data)
    assert lo == 0 and 30 <= hi <= 36 < data.max()
    assert np.mean(data <= hi) >= 0.99  # nearly every voxel is still told apart
    from napari_semiseg._reader import display_range

    assert display_range(np.full((4, 5, 5), 7.0)) == (7.0, 8.0)  # a constant scan still opens
    flat = np.zeros((4, 5, 5))
    flat[0, 0, :2] = 9.0  # nearly all one value: the full range, not an empty window
    assert display_range(flat) == (0.0, 9.0)


def test_anisotropic_scan_opens_with_scale_and_translate(make_napari_viewer, tmp_path, disc_scan):
    image, _ = disc_scan
    img = sitk.GetImageFromArray(image)
    img.SetSpacing((0.5, 0.7, 4.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetDirection(rotated_direction())
    path = tmp_path / "aniso.nrrd"
    sitk.WriteImage(img, str(path))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(layer.scale, (4.0, 0.7, 0.5))
    np.testing.assert_allclose(layer.translate, (3.0, 2.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(layer.metadata["geometry"]["direction"], rotated_direction(),
                               atol=1e-6)


def test_a_cine_opens_the_time_point_the_user_picks_and_the_assistant_segments_it(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, disc_model):
    import napari_semiseg._reader as reader_module
    from napari_semiseg._widget import AssistantWidget

    cine = np.stack([np.full((3, 24, 24), t, np.float32) for t in range(5)])
    cine[:, :, 8:16, 8:16] += 10.0  # something to see
    img = sitk.GetImageFromArray(cine, isVector=False)
    img.SetSpacing((1.5, 1.5, 10.0, 40.0))
    path = tmp_path / "patient001_4d.nii.gz"
    sitk.WriteImage(img, str(path))
    asked = []
    monkeypatch.setattr(reader_module, "choose_time_point",
                        lambda where, error: asked.append(error.time_points) or 2)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert asked == [5]
    np.testing.assert_array_equal(layer.data, cine[1])
    assert layer.name == "patient001_4d t=2"
    np.testing.assert_allclose(layer.scale, (10.0, 1.5, 1.5))
    widget = AssistantWidget(viewer)
    try:  # the time point is a scan the assistant works on: Predict gives its layers
        widget.set_checkpoint(disc_model)
        widget.predict()
        qtbot.waitUntil(lambda: not widget.jobs.busy, timeout=60000)
        s = widget.session
        assert s.image_path is None and s.prediction.shape == (3, 24, 24)
        assert viewer.layers["prediction"].data.shape == (3, 24, 24)
    finally:
        widget.bridge.close()
    monkeypatch.setattr(reader_module, "choose_time_point", lambda where, error: None)
    with pytest.raises(Exception, match="no time point chosen"):
        viewer.open(str(path), plugin=PLUGIN)
    assert len(viewer.layers) == 3  # nothing added: the scan, prediction and uncertainty


def test_save_labels_through_napari_keeps_scan_geometry(make_napari_viewer, tmp_path, disc_scan):
    image, label = disc_scan
    img = sitk.GetImageFromArray(image)
    img.SetSpacing((0.5, 0.7, 4.0))
    img.SetOrigin((-5.0, 6.0, 7.5))
    img.SetDirection(rotated_direction())
    src = tmp_path / "scan.nii.gz"
    sitk.WriteImage(img, str(src))
    viewer = make_napari_viewer()
    (scan,) = viewer.open(str(src), plugin=PLUGIN)
    mask = viewer.add_labels(label, scale=scan.scale, translate=scan.translate,
                             metadata=dict(scan.metadata), name="mask")
    out = tmp_path / "mask.nii.gz"
    written = mask.save(str(out), plugin=PLUGIN)
    assert written == [str(out)]
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), label)
    np.testing.assert_allclose(back.GetDirection(), rotated_direction(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), (-5.0, 6.0, 7.5), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), (0.5, 0.7, 4.0), rtol=1e-6)


def test_not_annotated_value_is_shown_distinctly(make_napari_viewer):
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(SAMPLES / "acdc/patient001_frame01_labels.nii.gz"), plugin=PLUGIN)
    colors = labels.colormap.map(np.array([0, 1, 2, 3, NOT_ANNOTATED]))
    assert colors[0, 3] == 0, "background is transparent"
    visible = [tuple(np.round(c, 3)) for c in colors[1:]]
    assert len(set(visible)) == 4, "each class and 'not annotated' get their own colour"
    assert 0 < colors[4, 3] < colors[1, 3], "not annotated is a faint veil, not a class"


def test_label_file_of_another_shape_is_refused(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "acdc/patient001_frame01.nii.gz"), plugin=PLUGIN)
    wrong = tmp_path / "labels" / "other.nii.gz"
    wrong.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 256, 216), np.uint8)), str(wrong))
    with pytest.raises(Exception, match=r"\(9, 256, 216\).*\(10, 256, 216\)"):
        viewer.open(str(wrong), plugin=PLUGIN)
    assert len(viewer.layers) == 1


def test_corrupt_file_in_viewer_says_which_file(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes((SAMPLES / "acdc/patient001_frame01.nii.gz").read_bytes()[:5000])
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="broken.nii.gz.*truncated"):
        viewer.open(str(bad), plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_demo_launch_screenshot_is_not_blank(tmp_path):
    """The real app, as `make demo` starts it, draws the scan (checked from its screenshot)."""
    shot = tmp_path / "demo.png"
    out = subprocess.run(
        [sys.executable, "-m", "napari_semiseg", "--screenshot", str(shot)],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(shot)))
    assert rgb.ndim == 3 and rgb.shape[0] > 300 and rgb.shape[1] > 400
    grey = rgb[..., :3].mean(-1)
    assert grey.std() > 20, "screenshot is flat: nothing was drawn"
    # the label colours of the sample (red RV, green Myo, blue LV) are on screen
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    assert ((r > 200) & (g < 120) & (b < 120)).sum() > 50
    assert ((b > 200) & (r < 150)).sum() > 50


def test_the_demo_fits_the_scan_to_the_canvas_the_dock_leaves():
    # fitted before the dock took its width, the left-atrium sample opened at 1.6x its fit,
    # the atrium cut off at both sides
    script = (
        "from napari_semiseg.__main__ import build_parser, open_viewer\n"
        "viewer, _ = open_viewer(build_parser().parse_args(['--sample', 'left_atrium', "
        "'--no-predict']))\n"
        "from qtpy.QtWidgets import QApplication\n"
        "for _ in range(20):\n"
        "    QApplication.processEvents()  # the window as the user first sees it\n"
        "shown = viewer.camera.zoom\n"
        "viewer.reset_view()\n"
        "print(shown / viewer.camera.zoom)\n"
        "viewer.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         encoding="utf-8", errors="replace", timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == pytest.approx(1.0, abs=0.02)


def test_cli_help_needs_no_display():
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "napari_semiseg", "--help"], capture_output=True,
                         text=True, encoding="utf-8", env=env, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout.lower()


def test_cli_bad_path_is_a_message_and_exit_code(tmp_path):
    out = subprocess.run([sys.executable, "-m", "napari_semiseg", str(tmp_path / "nope.nii.gz"),
                          "--screenshot", str(tmp_path / "x.png")],
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert out.returncode == 1
    assert "nope.nii.gz" in out.stderr and "Traceback" not in out.stderr

"""The slice-tags section of the assistant on an LGG PNG stack: tag, train from tags, promote."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES, key_binding, train_tiny_lgg

from napari_semiseg._tags import CAM_LAYER, KEY_NEGATIVE, KEY_POSITIVE, WEAK_LAYER, TagsPanel
from napari_semiseg._widget import AssistantWidget
from napari_semiseg.session import Session

pytestmark = pytest.mark.gui
PLUGIN = "napari-semiseg"
LGG = SAMPLES / "lgg/TCGA_CS_4941_19960909"


@pytest.fixture(scope="module")
def tiny_lgg_model(tmp_path_factory) -> str:
    """A tiny model trained 2 steps on the LGG sample's FLAIR channel."""
    return train_tiny_lgg(tmp_path_factory, channels=1)


def test_tag_train_from_tags_and_promote_on_an_lgg_stack(make_napari_viewer, qtbot,
                                                         tiny_lgg_model, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(LGG / "images"), plugin=PLUGIN)
    scan = viewer.layers[-1]
    assert scan.rgb and scan.data.shape == (23, 256, 256, 3)
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny_lgg_model)
    panel = widget.tags_panel
    assert isinstance(panel, TagsPanel)
    assert scan.name in [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    try:
        assert widget.ensure_session() is not None  # binds the scan, so go_to_slice works
        # tag with the buttons and with the keyboard shortcuts (slices 10-17 hold tumour)
        for index, btn in ((12, panel.pos_btn), (2, panel.neg_btn)):
            widget.go_to_slice(index)
            btn.click()
        for index, key in ((15, KEY_POSITIVE), (20, KEY_NEGATIVE), (5, KEY_NEGATIVE)):
            widget.go_to_slice(index)
            viewer.keymap[key_binding(viewer, key)](viewer)
        s = widget.session
        assert s.image.shape == (23, 256, 256)  # the FLAIR channel of the RGB stack
        np.testing.assert_array_equal(s.image, np.asarray(scan.data)[..., 1])
        assert s.tags == {12: 1, 2: 0, 15: 1, 20: 0, 5: 0}
        assert panel.count_label.text() == "Tags: 2 with structure, 3 without"

        panel.model_kwargs = {"base": 4, "depth": 2, "size": (32, 32)}
        panel.steps_spin.setValue(3)
        panel.train_btn.click()
        assert panel.bridge.running
        qtbot.waitUntil(lambda: not panel.bridge.running, timeout=180000)
        assert CAM_LAYER in viewer.layers and WEAK_LAYER in viewer.layers, panel.status.text()
        cam, weak = viewer.layers[CAM_LAYER], viewer.layers[WEAK_LAYER]
        assert cam.data.shape == weak.data.shape == (23, 256, 256)
        assert 0 <= cam.data.min() and cam.data.max() <= 1.0 + 1e-6
        assert (weak.data[[2, 5, 20]] == 0).all()  # "no structure" slices: empty weak masks
        assert s.current_version.method == "cam_weak"  # Retrain goes on from this network
        # the CAM layer is the map the weak masks were made from, by the engine's pipeline
        from training.engine.normalization import normalize_intensity
        from training.weak.localise import anomaly_map

        tags = np.full(23, -1, np.int8)
        tags[[12, 15]], tags[[2, 5, 20]] = 1, 0
        np.testing.assert_allclose(cam.data, anomaly_map(normalize_intensity(s.image), tags),
                                   atol=1e-5)
        assert "unlike those of the slices tagged absent" in panel.status.text()
        assert weak.data[12].any() and weak.data[15].any()

        widget.go_to_slice(12)
        assert panel.promote_current() == 12
        assert s.is_labelled(0, 12)
        expected = panel.weak[12].copy()
        np.testing.assert_array_equal(s.prediction[12], expected)
        s.save()
        assert Session.open(s.folder, autosave=False).tags[12] == 1
    finally:
        panel.close_bridge()
        widget.bridge.close()


def test_cancel_train_from_tags_keeps_the_model(make_napari_viewer, qtbot, tiny_lgg_model,
                                                tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(LGG / "images"), plugin=PLUGIN)
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny_lgg_model)
    panel = widget.tags_panel
    try:
        s = widget.ensure_session()
        for index, tag in ((12, 1), (15, 1), (2, 0), (20, 0)):
            s.tag_slice(index, tag)
        before = s.current_version
        assert not widget.cancel_btn.isEnabled()
        panel.model_kwargs = {"base": 4, "depth": 2, "size": (32, 32)}
        panel.steps_spin.setValue(100000)  # would run for hours
        panel.train_btn.click()
        assert widget.cancel_btn.isEnabled() and not panel.train_btn.isEnabled()
        qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=120000)
        widget.cancel_btn.click()
        qtbot.waitUntil(lambda: not panel.bridge.running, timeout=60000)
        assert "cancel" in panel.status.text().lower()
        assert s.current_version == before and CAM_LAYER not in viewer.layers
        assert panel.train_btn.isEnabled() and not widget.cancel_btn.isEnabled()
    finally:
        panel.close_bridge()
        widget.bridge.close()

"""pytest-qt: Predict with Automatic picks the sample's model, or warns instead of guessing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES

import napari_semiseg._model_dock as model_dock
from napari_semiseg._widget import PREDICTION, AssistantWidget
from napari_semiseg.model_library import SHIPPED_DIR

pytestmark = pytest.mark.gui
PLUGIN = "napari-semiseg"


def _assistant(make_napari_viewer, path, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_left_atrium_sample_gets_the_left_atrium_model(qtbot, make_napari_viewer, monkeypatch,
                                                      tmp_path):
    viewer, widget = _assistant(make_napari_viewer,
                                SAMPLES / "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz",
                                monkeypatch, tmp_path)
    try:
        widget.predict_btn.click()
        qtbot.waitUntil(lambda: widget._worker is None and widget.session is not None
                        and widget.session.uncertainty is not None, timeout=120000)
        assert "Left atrium model chosen" in widget.model_label.text()
        assert widget.session.settings.class_names == ["background", "left atrium"]
        assert set(viewer.layers[PREDICTION].data.ravel().tolist()) <= {0, 1}
        first = widget.session.versions[0]
        assert Path(widget.session.model_file(first)).stat().st_size == Path(
            SHIPPED_DIR / "la_unet2d.pt").stat().st_size
    finally:
        widget.bridge.close()


def test_a_scan_like_no_model_gets_a_warning_not_another_anatomys_classes(
        qtbot, make_napari_viewer, monkeypatch, tmp_path):
    import numpy as np

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    noise = np.random.default_rng(0).normal(size=(200, 64, 64)).astype(np.float32)
    viewer.add_image(noise, name="odd scan", scale=(0.2, 3.0, 3.0))
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    warnings: list[str] = []
    monkeypatch.setattr(model_dock, "show_warning", warnings.append)
    try:
        widget.predict_btn.click()
        assert widget.session is None and PREDICTION not in viewer.layers
        assert "choose New model" in widget.model_label.text()
        assert any("does not look like" in w for w in warnings)
    finally:
        widget.bridge.close()


def test_learn_between_scans_is_offered_for_a_new_models_series_only(qtbot, make_napari_viewer,
                                                                      monkeypatch, tmp_path):
    from napari_semiseg._dock_layout import AUTO, NEW

    viewer, widget = _assistant(make_napari_viewer,
                                SAMPLES / "left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz",
                                monkeypatch, tmp_path)
    box = widget.retrain_form.between_scans
    try:
        assert not box.enabled  # a library model's scans do not train between scans
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        assert box.enabled and box.value
        widget.model_combo.setCurrentText(AUTO)
        widget._model_chosen()
        assert not box.enabled
    finally:
        widget.bridge.close()

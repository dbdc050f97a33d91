"""pytest-qt: Predict, Retrain and Train from tags share one job slot, and cannot cross.

Each case was found by reading the code (issue 25) and failed before the dock had one slot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLES
from test_widget import _predict

import napari_semiseg._widget as widget_module
from napari_semiseg.session import Session

pytestmark = pytest.mark.gui


def _ready_to_retrain(qtbot, widget, steps: int) -> None:
    """Predicted, slices 3 and 6 accepted, the Retrain's steps set."""
    _predict(qtbot, widget)
    for z in (3, 6):
        widget.go_to_slice(z)
        widget.accept_slice()
    widget.retrain_form.steps.value = steps


def _wait_idle(qtbot, widget, timeout=180000) -> None:
    qtbot.waitUntil(lambda: not widget.bridge.running and not widget.tags_panel.bridge.running
                    and not widget.training, timeout=timeout)


def test_retrain_and_train_from_tags_never_run_at_once(qtbot, assistant, monkeypatch):
    viewer, widget = assistant
    warnings: list[str] = []
    monkeypatch.setattr(widget_module, "show_warning", warnings.append)
    panel = widget.tags_panel
    _ready_to_retrain(qtbot, widget, steps=100_000)
    s = widget.session
    s.tag_slice(5, 1)
    s.tag_slice(0, 0)
    panel.model_kwargs = {"base": 4, "depth": 2, "size": (32, 32)}
    panel.steps_spin.setValue(100_000)
    panel.train_btn.click()
    try:
        assert panel.bridge.running
        assert not widget.retrain_btn.isEnabled()
        assert "Train from tags" in widget.retrain_btn.toolTip()
        widget.retrain()  # what a click would do, were the button enabled
        assert not widget.bridge.running, "a second training started beside Train from tags"
        assert any("Train from tags is running" in w for w in warnings)
    finally:
        panel.cancel()
        _wait_idle(qtbot, widget)
    widget.retrain_btn.click()  # and the other way round
    try:
        assert widget.bridge.running
        assert not panel.train_btn.isEnabled() and "Retrain" in panel.train_btn.toolTip()
        panel.train_from_tags()
        assert not panel.bridge.running
    finally:
        widget.cancel()
        _wait_idle(qtbot, widget)
    assert len(s.versions) == 1  # both cancelled: the model is as it was


def test_a_retrain_result_lands_only_on_the_scan_it_was_started_for(qtbot, assistant,
                                                                    tiny_model, tmp_path):
    viewer, widget = assistant
    # another scan of the same shape, saved as a session: it has a v0 too
    other = Session(widget_module.grey_scan(viewer.layers[0].data) + 1,
                    folder=tmp_path / "other", autosave=False)
    other.add_version(tiny_model, note="starting model")
    other.save()
    other.close()
    _ready_to_retrain(qtbot, widget, steps=4)
    s = widget.session
    widget.retrain_btn.click()
    assert widget.bridge.running
    for control in (widget.open_session_btn, widget.model_combo, widget.predict_btn,
                    widget.use_btn, widget.image_combo):
        assert not control.isEnabled(), control
        assert "Retrain is running" in control.toolTip()
    assert widget.open_session(str(tmp_path / "other")) is None  # refused while it runs
    widget.set_checkpoint(tiny_model)  # refused too: it would change the model in use
    assert widget.session is s and len(s.versions) == 1
    _wait_idle(qtbot, widget)
    assert [v.id for v in s.versions] == ["v0", "v1"]  # the result went to its own scan
    record = json.loads((tmp_path / "other" / "session.json").read_text())
    assert [v["id"] for v in record["versions"]] == ["v0"]
    assert widget.open_session_btn.isEnabled() and widget.predict_btn.isEnabled()
    assert "Retrain is running" not in widget.open_session_btn.toolTip()


def test_predict_waits_while_a_retrain_runs(qtbot, assistant):
    viewer, widget = assistant
    _ready_to_retrain(qtbot, widget, steps=100_000)
    before = widget.session.prediction.copy()
    widget.retrain_btn.click()
    try:
        assert widget.bridge.running
        assert not widget.predict_btn.isEnabled()
        widget.predict()  # a rejected retrain would have thrown its prediction away
        assert widget._worker is None
    finally:
        widget.cancel()
        _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(widget.session.prediction, before)


def test_retrain_reads_no_scan_on_the_qt_thread(qtbot, assistant, tmp_path, monkeypatch):
    import shutil

    import training.core.io

    viewer, widget = assistant
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    shutil.copy(SAMPLES / "acdc/patient001_frame01.nii.gz", folder / "a.nii.gz")
    (folder / "b.nii.gz").write_bytes(b"not a scan")  # the child says it skipped it
    widget.choose_unlabelled_folder(str(folder))
    _ready_to_retrain(qtbot, widget, steps=2)
    warnings: list[str] = []
    monkeypatch.setattr(widget_module, "show_warning", warnings.append)
    reads: list[str] = []
    real = training.core.io.read_image
    monkeypatch.setattr(training.core.io, "read_image",
                        lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    widget.retrain_btn.click()
    assert widget.bridge.running
    assert reads == [], "Retrain read scan files on the Qt thread"
    _wait_idle(qtbot, widget)
    assert any("1 unlabelled scan(s) skipped" in w and "b.nii.gz" in w for w in warnings), warnings
    assert len(widget.session.versions) == 2

"""The assistant as a user meets it: Predict, paint, Retrain in the background, versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

from napari_semiseg._dock_layout import NEW
from napari_semiseg._widget import PREDICTION, UNCERTAINTY, AssistantWidget
from napari_semiseg.io import read_volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-semiseg"


def _predict(qtbot, widget):
    widget.predict_btn.click()
    qtbot.waitUntil(lambda: widget._worker is None and widget.session is not None
                    and widget.session.uncertainty is not None, timeout=60000)


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segmentation assistant")
    assert isinstance(widget, AssistantWidget)


def test_predict_adds_prediction_and_uncertainty_on_the_scan(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    pred, unc = viewer.layers[PREDICTION], viewer.layers[UNCERTAINTY]
    scan = viewer.layers["patient001_frame01"]
    assert pred.data.shape == scan.data.shape == unc.data.shape
    np.testing.assert_allclose(pred.scale, scan.scale)
    np.testing.assert_allclose(pred.translate, scan.translate)
    assert pred.data.max() < 4 and np.isfinite(unc.data).all() and unc.data.max() > 0
    assert "geometry" in pred.metadata
    # the slider names the scan's axes, and the assistant's layers share them
    assert tuple(scan.axis_labels) == tuple(pred.axis_labels) == ("z", "y", "x")
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")


def test_a_scan_from_a_library_model_keeps_retrains_within_its_painted_ends(qtbot, assistant):
    # where the shipped model falls short, the user paints the structure's first, middle and
    # last slices, and the Retrain predicts nothing beyond them (chosen on LGG val patients)
    from training.interactive.loop import PAINT_ENDS_EVERY_SCAN

    viewer, widget = assistant
    widget.retrain_form.within_extent.value = not PAINT_ENDS_EVERY_SCAN
    _predict(qtbot, widget)
    assert widget.retrain_form.within_extent.value == PAINT_ENDS_EVERY_SCAN
    assert "first, middle and last slices" in widget.status.text()


def test_next_uncertain_slice_goes_to_the_top_ranked_slice(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    from training.interactive.loop import SUGGEST_BODY_FIRST, rank_uncertain_slices

    pred = widget.session.prediction
    expected = rank_uncertain_slices(widget.session.uncertainty, [], 0, prediction=pred,
                                     start_at_body=SUGGEST_BODY_FIRST)[0][0]
    if SUGGEST_BODY_FIRST:  # nothing painted yet: the structure's largest section first
        areas = ((pred != 0) & (pred != 255)).reshape(len(pred), -1).sum(1)
        assert expected == int(areas.argmax())
    assert widget.next_uncertain_slice() == expected
    assert widget.current_slice() == expected
    assert widget.uncertain_list.count() > 0
    assert widget.uncertain_list.item(0).text().startswith(f"slice {expected} ")
    if SUGGEST_BODY_FIRST:  # the list says why a low-entropy slice comes first
        assert widget.uncertain_list.item(0).text().endswith("largest section: start here")
        # and the next by its uncertainty, as a share of the most unsure listed slice's
        assert widget.uncertain_list.item(1).text().endswith("unsure near the structure: 100 %")


def test_a_preview_is_drawn_at_once_and_its_suggestions_ranked_off_the_ui_thread(
        qtbot, assistant, tmp_path):
    # a mid-Retrain preview redraws the prediction in the event's own tick; ranking the
    # uncertain slices over the whole scan there blocked the event loop (the GUIDE allows
    # 100 ms), so the list follows from a thread
    from types import SimpleNamespace

    viewer, widget = assistant
    _predict(qtbot, widget)
    body = 8 if widget.session.starting_slice(0) != 8 else 1  # not the list's top now
    preview = np.zeros_like(widget.session.prediction)
    preview[body, 40:200, 40:180] = 3  # the structure's largest section moves there
    preview[2, 100:110, 100:110] = 3  # and a smaller one
    np.save(tmp_path / "preview.npy", preview)
    widget._running = SimpleNamespace(session=widget.session)  # as while a Retrain runs
    try:
        widget._handle_event({"type": "prediction", "path": str(tmp_path / "preview.npy")})
        np.testing.assert_array_equal(viewer.layers[PREDICTION].data[body], preview[body])
        top = f"slice {body}   the structure's largest section: start here"
        first = widget.uncertain_list.item(0)
        assert first is None or first.text() != top  # not ranked within the UI's tick
        qtbot.waitUntil(lambda: widget.uncertain_list.count() > 0
                        and widget.uncertain_list.item(0).text() == top, timeout=30000)
    finally:
        widget._running = None


def test_painting_marks_slice_labelled_and_undo_still_works(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    layer = viewer.layers[PREDICTION]
    widget.go_to_slice(4)
    before = layer.data[4].copy()
    layer.brush_size = 6
    layer.paint((4, 100, 100), 3)  # what a brush stroke does
    assert widget.session.labelled_slices(0) == [4]
    assert "Labelled slices: 1 (z: 4)" in widget.labelled_label.text()
    assert (widget.session.user_labels[4, 100, 100] == 3)
    layer.undo()
    np.testing.assert_array_equal(layer.data[4], before)
    # napari's undo sends no event: the slice stays labelled, as the model drew it, until
    # Forget slice (the guide says so)
    assert widget.session.labelled_slices(0) == [4]


def test_accept_slice_marks_current_slice(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    widget.go_to_slice(7)
    widget.accept_btn.click()
    assert widget.session.labelled_slices(0) == [7]


def test_full_loop_retrain_keeps_painted_slice_and_refreshes_others(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    layer = viewer.layers[PREDICTION]
    truth = read_volume(SAMPLES / "acdc/patient001_frame01_labels.nii.gz").data
    # the user corrects three slices (copying the expert's labels with the brush's effect)
    for z in (3, 5, 7):
        widget.go_to_slice(z)
        layer.brush_size = 1
        layer.paint((z, 5, 5), 2)  # a stroke: this marks the slice as labelled
        qtbot.waitUntil(lambda z=z: z in widget.session.labelled_slices(0))
        layer.data[z] = truth[z]  # the rest of the correction, as many strokes would leave it
        layer.refresh()
    painted = {z: layer.data[z].copy() for z in (3, 5, 7)}
    old_other = layer.data[[0, 1, 2, 4, 6, 8, 9]].copy()
    widget.retrain_form.steps.value = 4
    widget.retrain_form.method.value = "mean_teacher"
    # corrections in the structure's middle, not its ends: the prediction beyond them stays
    widget.retrain_form.within_extent.value = False
    widget.retrain_btn.click()
    assert widget.bridge.running and widget.cancel_btn.isEnabled()
    # the user keeps painting while it trains
    layer.paint((5, 120, 120), 2)
    painted[5] = layer.data[5].copy()
    qtbot.waitUntil(lambda: widget.session.user_labels[5, 120, 120] == 2)
    qtbot.waitUntil(lambda: not widget.training, timeout=240000)
    s = widget.session
    assert len(s.versions) == 2, widget.status.text()
    assert widget.versions_list.count() == 2
    for z, arr in painted.items():
        np.testing.assert_array_equal(layer.data[z], arr)  # bit for bit
    v = s.versions[-1]
    if v.adopted:
        assert s.current == v.id
        assert not np.array_equal(layer.data[[0, 1, 2, 4, 6, 8, 9]], old_other)
        # one sentence: the version, then why it was adopted
        assert widget.status.text().startswith(f"Done: version {v.id} in use (adopted: ")
    else:
        assert s.current == s.versions[0].id
        np.testing.assert_array_equal(layer.data[[0, 1, 2, 4, 6, 8, 9]], old_other)
    assert "step" in widget.status.text() or "version" in widget.status.text()
    # the uncertain slices are ranked again off the UI thread; none of the painted ones
    qtbot.waitUntil(lambda: widget.uncertain_list.count() > 0, timeout=30000)
    listed = {int(widget.uncertain_list.item(k).text().split()[1])
              for k in range(widget.uncertain_list.count())}
    assert not listed & {3, 5, 7}


def test_the_user_is_told_before_a_retrain_drops_the_prediction_beyond_the_ends(
        qtbot, assistant, monkeypatch):
    import napari_semiseg._widget as widget_module

    viewer, widget = assistant
    _predict(qtbot, widget)
    told: list[str] = []
    monkeypatch.setattr(widget_module, "show_info", told.append)
    layer = viewer.layers[PREDICTION]
    for z in (4, 6):  # two middle slices painted with the box ticked
        widget.go_to_slice(z)
        layer.paint((z, 128, 128), 2)
        qtbot.waitUntil(lambda z=z: z in widget.session.labelled_slices(0))
    assert layer.data[[0, 1, 2, 3, 7, 8, 9]].any()  # the model shows it beyond them
    widget.retrain_form.within_extent.value = True
    widget.retrain_form.steps.value = 2000
    widget.retrain()
    assert any("nothing beyond slices 4 and 6" in m for m in told), told
    widget.cancel_btn.click()
    qtbot.waitUntil(lambda: not widget.training, timeout=60000)


def test_cancel_keeps_current_version(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    widget.go_to_slice(5)
    widget.accept_slice()
    widget.retrain_form.steps.value = 2000
    widget.retrain()
    qtbot.waitUntil(lambda: "step" in widget.status.text(), timeout=120000)
    widget.cancel_btn.click()
    qtbot.waitUntil(lambda: not widget.training, timeout=60000)
    assert len(widget.session.versions) == 1
    assert widget.session.current == widget.session.versions[0].id
    assert "Cancelled" in widget.status.text()


def test_retrain_without_labelled_slice_is_refused(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    widget.retrain()
    assert not widget.training
    assert len(widget.session.versions) == 1


def test_no_image_is_a_notification_not_a_crash(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    widget = AssistantWidget(viewer)
    widget.set_checkpoint(tiny_model)
    widget.predict()
    assert widget.session is None


def test_corrupt_checkpoint_is_refused(make_napari_viewer, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    viewer = make_napari_viewer()
    widget = AssistantWidget(viewer)
    widget.set_checkpoint(str(bad))
    assert widget.checkpoint_path is None


def test_save_and_open_session_restore_labels_and_versions(qtbot, assistant, tmp_path):
    viewer, widget = assistant
    _predict(qtbot, widget)
    widget.go_to_slice(2)
    widget.accept_slice()
    folder = widget.save_session(str(tmp_path / "saved"))
    assert folder
    labelled = viewer.layers[PREDICTION].data[2].copy()
    viewer.layers.clear()
    s = widget.open_session(folder)
    assert s.labelled_slices(0) == [2]
    from napari_semiseg._reader import display_range

    # the reopened scan is windowed as File > Open windows it
    assert viewer.layers[widget._image_layer.name].contrast_limits == list(
        display_range(s.image))
    np.testing.assert_array_equal(viewer.layers[PREDICTION].data[2], labelled)
    assert len(s.versions) == 1


def test_a_full_disk_is_reported_once_and_predict_does_not_hang(qtbot, assistant, monkeypatch):
    """SimpleITK's silent full-disk writes are caught by the writer (tests/test_reliability.py,
    on a real tmpfs); here the widget must tell the user once and carry on."""
    import napari_semiseg._widget as widget_module
    import napari_semiseg.session_files as session_files
    from napari_semiseg.io import WriteError

    viewer, widget = assistant
    _predict(qtbot, widget)
    errors: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)

    def full_disk(path, *args, **kwargs):
        raise WriteError(f"cannot write {path}: the disk is full (0 bytes free)")

    monkeypatch.setattr(session_files, "write_volume", full_disk)
    _predict(qtbot, widget)  # a second Predict on a full disk
    assert widget.status.text().startswith("Prediction ready")
    layer = viewer.layers[PREDICTION]
    layer.brush_size = 6
    for z in (2, 3):  # painting goes on
        widget.go_to_slice(z)
        layer.paint((z, 100, 100), 2)
    # autosave runs on a writer thread: its error arrives on the UI thread through a signal
    assert widget.session.flush()
    qtbot.waitUntil(lambda: len(errors) >= 1, timeout=10_000)
    qtbot.wait(200)  # nothing more comes: once per run of failures, not per stroke
    assert len(errors) == 1 and "Autosave" in errors[0] and "disk is full" in errors[0]
    assert widget.session.labelled_slices(0) == [2, 3]
    monkeypatch.undo()  # space again: the next change is saved and the error clears
    widget.go_to_slice(5)
    widget.accept_btn.click()
    assert widget.session.flush()
    assert widget.session.autosave_error is None


def test_a_failed_reopen_of_its_own_folder_keeps_autosaving(qtbot, assistant):
    """Issue 24: reopening the window's own session folder used to close the session first;
    when the open then failed, the window went on without autosaving, and said nothing."""
    from napari.utils.notifications import notification_manager

    from napari_semiseg.session import Session

    viewer, widget = assistant
    _predict(qtbot, widget)
    widget.go_to_slice(2)
    widget.accept_btn.click()
    s = widget.session
    assert s.flush()
    (s.folder / "prediction.nii.gz").write_bytes(b"\x1f\x8b not a scan")  # broken on disk
    seen = len(notification_manager.records)
    assert widget.open_session(str(s.folder)) is None
    assert any("prediction.nii.gz" in str(n.message)
               for n in notification_manager.records[seen:])
    assert widget.session is s and s.autosave_enabled
    widget.go_to_slice(3)
    widget.accept_btn.click()  # still saved where it was, repairing the broken file
    assert s.flush()
    assert Session.open(s.folder, autosave=False).labelled_slices(0) == [2, 3]


def test_the_dock_leaves_two_thirds_of_a_1500_px_window_to_the_scan(make_napari_viewer, qtbot,
                                                                     tmp_path, monkeypatch):
    from napari_semiseg._widget import dock_assistant

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer(show=True)
    viewer.open(str(SAMPLES / "lgg/TCGA_CS_4941_19960909/images"), plugin=PLUGIN)
    window = viewer.window._qt_window
    window.resize(1500, 950)
    widget = dock_assistant(viewer)
    try:
        titles = [s.header.text() for s in widget.sections.values()]
        assert titles == ["Model and Predict", "Review and correct", "Retrain and versions",
                          "Structures", "Slice tags", "Session"]  # the loop's order
        for section in widget.sections.values():  # everything open: the dock scrolls
            section.expand()
        qtbot.wait(300)
        assert window.width() == 1500 and window.height() == 950  # the window did not grow
        assert widget.width() <= 1500 / 3, widget.width()
        assert widget.retrain_btn.isVisible()
        widget.sections["retrain"].expand(False)
        assert not widget.retrain_btn.isVisible()
    finally:
        widget.bridge.close()


def test_a_saved_model_keeps_learning_from_its_scans_after_a_restart(qtbot, assistant):
    from napari_semiseg.finished_scans import companion
    from napari_semiseg.model_library import user_models_dir

    viewer, widget = assistant
    _predict(qtbot, widget)
    layer = viewer.layers[PREDICTION]
    truth = read_volume(SAMPLES / "acdc/patient001_frame01_labels.nii.gz").data
    widget.go_to_slice(5)
    layer.paint((5, 5, 5), 2)
    qtbot.waitUntil(lambda: 5 in widget.session.labelled_slices(0))
    layer.data[5] = truth[5]
    widget.retrain_form.steps.value = 2
    widget.retrain_form.within_extent.value = False
    widget.retrain_btn.click()
    qtbot.waitUntil(lambda: not widget.training, timeout=240000)
    assert widget.learned_model is not None, widget.status.text()  # one slice: not judged
    path = user_models_dir() / "heart.pt"
    user_models_dir().mkdir(parents=True)
    assert widget.save_model(str(path)) == str(path)
    saved = companion(path)
    [(img, seg)] = widget.finished.files()  # this scan, as it stands, went with the model
    assert Path(img).parent == saved
    np.testing.assert_array_equal(np.load(seg)[5], truth[5])
    # napari is restarted: a fresh dock, the saved model picked from the Model list
    again = AssistantWidget(viewer)
    viewer.window.add_dock_widget(again)
    try:
        label = next(m.label for m in again._library if m.path == path)
        again.model_combo.setCurrentText(label)
        again._model_chosen()
        assert again.checkpoint_path == str(path)
        assert not again.new_model  # not taught with New model: no series rules
        assert again.finished.files() == [(img, seg)]
        assert "1 finished scan" in again.model_label.text()
        # another model chosen: its scans stop teaching, and stay saved with it
        again.model_combo.setCurrentText(NEW)
        again._model_chosen()
        assert again.finished.files() == [] and Path(img).is_file()
    finally:
        again.bridge.close()


def test_forget_slice_unlabels_a_slip_and_the_next_predict_fills_it(qtbot, assistant):
    viewer, widget = assistant
    _predict(qtbot, widget)
    layer = viewer.layers[PREDICTION]
    model_slice = layer.data[4].copy()
    layer.brush_size = 6
    meant = 1 if layer.data[6, 100, 100] != 1 else 2  # not what the model draws there
    widget.go_to_slice(6)
    layer.paint((6, 100, 100), meant)  # a slice the user means
    widget.go_to_slice(4)
    layer.paint((4, 100, 100), 1 if model_slice[100, 100] != 1 else 2)  # a slip of the brush
    assert widget.session.labelled_slices(0) == [4, 6]

    widget.forget_btn.click()
    assert widget.session.labelled_slices(0) == [6]
    assert (widget.session.user_labels[4] == 255).all()
    assert "Labelled slices: 1 (z: 6)" in widget.labelled_label.text()
    assert "no longer labelled" in widget.status.text()
    widget.forget_btn.click()  # twice: nothing left to forget there, and it says so
    assert widget.session.labelled_slices(0) == [6]

    _predict(qtbot, widget)
    np.testing.assert_array_equal(layer.data[4], model_slice)  # the model's again
    assert layer.data[6, 100, 100] == meant  # the meant slice keeps its voxels

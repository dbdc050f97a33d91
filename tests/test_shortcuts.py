"""The loop's keyboard shortcuts, pressed on the canvas as a user presses them while painting."""

from __future__ import annotations

import pytest
from conftest import key_binding
from qtpy.QtCore import Qt

from napari_semiseg._widget import PREDICTION
from napari_semiseg.shortcuts import SHORTCUTS, shortcut_of

pytestmark = pytest.mark.gui


def _press(qtbot, viewer, key: int) -> None:
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key, Qt.ShiftModifier)


def test_shift_u_enter_r_walk_the_loop_without_leaving_the_canvas(qtbot, assistant):
    viewer, widget = assistant
    widget.predict_btn.click()
    qtbot.waitUntil(lambda: widget._worker is None and widget.session is not None
                    and widget.session.uncertainty is not None, timeout=60000)
    viewer.layers.selection.active = viewer.layers[PREDICTION]  # the brush's layer
    ranked = widget.session.ranked_uncertain_slices(0)
    widget.go_to_slice(ranked[-1][0])

    _press(qtbot, viewer, Qt.Key_U)  # next uncertain slice
    assert widget.current_slice() == ranked[0][0]

    _press(qtbot, viewer, Qt.Key_Return)  # accept it
    assert widget.session.labelled_slices(0) == [ranked[0][0]]

    widget.retrain_form.steps.value = 2000
    _press(qtbot, viewer, Qt.Key_R)  # retrain, in the background
    assert widget.training
    widget.cancel_btn.click()
    qtbot.waitUntil(lambda: not widget.training, timeout=60000)
    assert len(widget.session.versions) == 1


def test_the_buttons_name_their_keys_and_a_closed_dock_lets_them_go(qtbot, assistant):
    viewer, widget = assistant
    assert "Shift+U" in widget.next_btn.toolTip()
    assert "Shift+Enter" in widget.accept_btn.toolTip()
    assert shortcut_of("retrain") == "Shift+R"
    assert all(key_binding(viewer, key) is not None for key in SHORTCUTS)

    widget.bridge.close()
    widget.deleteLater()
    qtbot.waitUntil(lambda: all(key_binding(viewer, key) is None for key in SHORTCUTS),
                    timeout=5000)


def test_closing_one_of_two_docks_leaves_the_other_its_keys(qtbot, assistant):
    from napari_semiseg._widget import AssistantWidget

    viewer, first = assistant
    second = AssistantWidget(viewer)  # the newest dock takes the keys
    calls = []
    first.accept_slice = lambda: calls.append("first")
    second.accept_slice = lambda: calls.append("second")
    viewer.keymap[key_binding(viewer, "Shift-Enter")](viewer)
    first.bridge.close()
    first.deleteLater()
    qtbot.wait(200)
    viewer.keymap[key_binding(viewer, "Shift-Enter")](viewer)  # still bound, to the second dock
    assert calls == ["second", "second"]
    second.bridge.close()
    second.deleteLater()
    qtbot.waitUntil(lambda: key_binding(viewer, "Shift-Enter") is None, timeout=5000)


def test_the_keys_are_not_napari_layer_keys_so_they_work_whatever_layer_is_active(
        qtbot, assistant):
    """napari's own layer shortcuts win over the viewer's: a loop key that one of them also
    uses (Shift+A selects every point in the slice) does nothing of ours on that layer."""
    from napari.utils.shortcuts import default_shortcuts

    from napari_semiseg._tags import KEY_NEGATIVE, KEY_POSITIVE

    taken = {str(k) for keys in default_shortcuts.values() for k in keys}
    ours = [*SHORTCUTS, KEY_POSITIVE, KEY_NEGATIVE]
    assert not {key.replace("-", "+") for key in ours} & taken

    viewer, widget = assistant
    widget.predict_btn.click()
    qtbot.waitUntil(lambda: widget._worker is None and widget.session is not None,
                    timeout=60000)
    viewer.add_points([[4, 100, 100]], name="landmarks")  # the active layer now
    canvas = viewer.window._qt_viewer.canvas.native
    assert shortcut_of("accept_slice") == "Shift+Enter"
    for z, key in ((4, Qt.Key_Return), (6, Qt.Key_Enter)):  # the main key, the keypad's
        widget.go_to_slice(z)
        canvas.setFocus()
        qtbot.keyClick(canvas, key, Qt.ShiftModifier)
    assert widget.session.labelled_slices(0) == [4, 6]

"""The session against a real napari Labels layer (no viewer, no display): paint events mark
slices, napari's undo is respected, merges keep the user's voxels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_semiseg.session import Session

napari_layers = pytest.importorskip("napari.layers")

SHAPE = (5, 24, 24)


@pytest.fixture
def bound():
    s = Session(np.zeros(SHAPE, np.float32), prediction=np.zeros(SHAPE, np.uint8))
    layer = napari_layers.Labels(s.prediction)
    assert layer.data is s.prediction  # the binding the widget relies on: one shared array
    painted: list[list[int]] = []
    layer.events.paint.connect(
        lambda e: painted.append(s.detect_painted_slices(indices=e.value, axis=0)))
    return s, layer, painted


def test_brush_fill_and_polygon_mark_their_slices(bound):
    s, layer, painted = bound
    layer.brush_size = 3
    layer.paint((2, 10, 10), 1)
    layer.fill((4, 1, 1), 2)
    layer.paint_polygon([(1, 2, 2), (1, 2, 9), (1, 9, 9)], 3)
    assert painted == [[2], [4], [1]]
    assert s.labelled_slices(0) == [1, 2, 4]
    assert s.user_labels[2, 10, 10] == 1 and (s.user_labels[4] == 2).all()
    assert (s.user_labels[[0, 3]] == 255).all()
    new = np.full(SHAPE, 7, np.uint8)
    s.merge_prediction(new)
    assert layer.data[2, 10, 10] == 1 and (layer.data[4] == 2).all()
    assert (layer.data[[0, 3]] == 7).all()


def test_undo_is_respected_by_the_next_merge(bound):
    s, layer, _ = bound
    layer.brush_size = 3
    layer.paint((3, 5, 5), 1)
    layer.paint((3, 15, 15), 2)
    layer.undo()  # napari emits no paint event for an undo
    assert layer.data[3, 15, 15] == 0
    s.merge_prediction(np.full(SHAPE, 4, np.uint8))
    assert s.prediction[3, 15, 15] == 0 and s.prediction[3, 5, 5] == 1
    assert s.training_labels()[3, 15, 15] == 0


def test_stroke_is_on_disk_as_soon_as_napari_reports_it(tmp_path):
    folder = tmp_path / "session"
    s = Session(np.zeros(SHAPE, np.float32), prediction=np.zeros(SHAPE, np.uint8),
                folder=folder)
    layer = napari_layers.Labels(s.prediction)
    layer.events.paint.connect(lambda e: s.detect_painted_slices(indices=e.value, axis=0))
    layer.brush_size = 3
    layer.paint((1, 12, 12), 2)  # napari reports this before writing it to the array
    layer.data_setitem((np.array([3]), np.array([4]), np.array([5])), 6)
    reopened = Session.open(folder, autosave=False)  # as if the process were killed now
    assert reopened.labelled_slices(0) == [1, 3]
    assert reopened.user_labels[1, 12, 12] == 2 and reopened.user_labels[3, 4, 5] == 6
    assert np.array_equal(reopened.prediction, layer.data)

"""The dock with a model that reads every channel of an RGB stack (the LGG sequences)."""

from __future__ import annotations

import pytest
from conftest import SAMPLES, train_tiny_lgg

from napari_semiseg._widget import PREDICTION, AssistantWidget

pytestmark = pytest.mark.gui
LGG = SAMPLES / "lgg/TCGA_CS_4941_19960909"


@pytest.fixture(scope="module")
def tiny_rgb_model(tmp_path_factory) -> str:
    """A tiny model trained 2 steps on all three channels of the LGG sample's slices."""
    return train_tiny_lgg(tmp_path_factory, channels=3)


def test_predict_with_an_rgb_model_reads_the_stack_s_channels(make_napari_viewer, qtbot,
                                                              tiny_rgb_model, tmp_path,
                                                              monkeypatch):
    from napari.utils.notifications import notification_manager

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(LGG / "images"), plugin="napari-semiseg")
    assert viewer.layers[-1].rgb
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(tiny_rgb_model)
    widget.predict()
    qtbot.waitUntil(lambda: widget._worker is None and PREDICTION in viewer.layers,
                    timeout=60000)
    assert viewer.layers[PREDICTION].data.shape == (23, 256, 256)
    assert widget.session.channels.shape == (23, 256, 256, 3)
    # the same model on a grey scan: a notification that says why, no prediction
    viewer.layers.clear()
    viewer.open(str(SAMPLES / "acdc/patient001_frame01.nii.gz"), plugin="napari-semiseg")
    errors: list[str] = []
    notification_manager.notification_ready.connect(lambda n: errors.append(str(n.message)))
    widget.image_combo.setCurrentText(viewer.layers[-1].name)
    widget.predict()
    qtbot.waitUntil(lambda: any("reads 3 channels" in e for e in errors), timeout=30000)

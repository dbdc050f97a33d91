"""The dock with a model that reads every channel of an RGB stack (the LGG sequences)."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from napari_semiseg._widget import PREDICTION, AssistantWidget
from napari_semiseg.io import read_volume

pytestmark = pytest.mark.gui
LGG = SAMPLES / "lgg/TCGA_CS_4941_19960909"


@pytest.fixture(scope="module")
def tiny_rgb_model(tmp_path_factory) -> str:
    """A 3-channel U-Net (base 4) trained for 2 steps on the LGG sample's RGB slices."""
    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, train

    img = read_volume(LGG / "images").data
    lab = read_volume(LGG / "masks", as_labels=True).data
    data = TrainData.from_arrays([img[:, ::4, ::4]], [lab[:, ::4, ::4]], num_classes=2)
    out = tmp_path_factory.mktemp("model") / "rgb.pt"
    cfg = TrainConfig(method="supervised", steps=2, size=[32, 32], base=4, depth=2,
                      labeled_bs=2, unlabeled_bs=0, checkpoint=str(out), device="cpu")
    return train(cfg, data)


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

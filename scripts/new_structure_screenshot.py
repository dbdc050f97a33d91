"""Make docs/new_structure.png: the real app teaching a new structure (run under `xvfb-run -a`).

Opens the left-atrium sample, chooses New model, names the structure "left atrium", paints five
slices (the expert's labels stand in for the user's brush), clicks Retrain and shoots the window
once the retrained model's prediction fills the slices nobody painted.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/new_structure_screenshot.py

With ``OUT 3`` it paints the structure's first, middle and last slices only: the dock then
suggests the slices halfway between them.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from readme_screenshot import ROOT, pump_until, shoot_and_close


def main(out: str = "docs/new_structure.png", painted: str = "5") -> int:
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-screenshot")
    import napari

    from napari_semiseg._dock_layout import NEW
    from napari_semiseg._widget import dock_assistant
    from napari_semiseg.io import read_volume
    from training.interactive.interpolation import even_slices

    case = ROOT / "sample_data/left_atrium/UPT6DX9IQY9JAZ7HJKA7"
    viewer = napari.Viewer(title="napari-semiseg")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(f"{case}.nii.gz", plugin="napari-semiseg")
    widget = dock_assistant(viewer)
    widget.structures.rename(1, "left atrium")
    widget.model_combo.setCurrentText(NEW)
    widget._model_chosen()
    truth = read_volume(f"{case}_labels.nii.gz").data
    layer = viewer.layers["prediction"]
    for z in even_slices(truth, int(painted)):
        ys, xs = np.nonzero(truth[z] == 1)
        layer.data_setitem((np.full(len(ys), z), ys, xs), 1)  # what the brush does
    widget.retrain_form.steps.value = 200
    widget.retrain_btn.click()
    pump_until(lambda: not widget.training, 900)
    pump_until(lambda: widget.uncertain_list.count() > 0, 60)  # ranked in a thread
    widget.go_to_slice(int(np.median(np.nonzero(truth.any((1, 2)))[0])) + 3)
    viewer.reset_view()
    viewer.layers["uncertainty"].visible = False  # the prediction itself, on the scan
    from napari.utils.notifications import notification_manager

    notification_manager.records.clear()
    return shoot_and_close(viewer, widget, out)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Make docs/screenshot.png: the real app mid-loop (run under a display: `xvfb-run -a`).

Opens the ACDC sample with the shipped model, predicts, corrects three slices (the expert's
labels stand in for the user's brush), clicks Retrain and shoots the window while the retrain
is running and its first refreshed prediction is on screen.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/readme_screenshot.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def pump_until(cond, timeout: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("the app did not get there in time")
        QApplication.processEvents()
        time.sleep(0.01)


def main(out: str = "docs/screenshot.png") -> int:
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-screenshot")
    import napari

    from napari_semiseg._widget import dock_assistant
    from napari_semiseg.io import read_volume

    viewer = napari.Viewer(title="napari-semiseg")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(str(ROOT / "sample_data/acdc/patient001_frame01.nii.gz"), plugin="napari-semiseg")
    widget = dock_assistant(viewer)
    widget.predict()
    pump_until(lambda: not widget.jobs.busy and widget.session is not None
               and widget.session.uncertainty is not None, 300)
    truth = read_volume(ROOT / "sample_data/acdc/patient001_frame01_labels.nii.gz").data
    for z in (2, 5, 8):
        widget.session.mark_labelled(0, z, truth[z].astype(np.uint8))
    widget.show_session()
    widget.retrain_form.steps.value = 60
    widget.retrain_btn.click()
    pump_until(lambda: viewer.layers["prediction"].data is not None
               and "step" in widget.status.text() and widget.progress.value() >= 25, 600)
    widget.next_uncertain_slice()
    return shoot_and_close(viewer, widget, out)


def shoot_and_close(viewer, widget, out: str) -> int:
    """Let the window settle, save the whole window to ``out``, and close everything."""
    pump_until(lambda: True, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out, canvas_only=False)
    print(widget.status.text())
    widget.bridge.close()
    viewer.close()
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

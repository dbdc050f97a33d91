"""Training between scans through the dock: the next scan's prediction, at once and refreshed.

Under a display (`xvfb-run -a`): a New model taught on a first scan through the dock (its
structures named, K slices painted from the expert labels, Retrain with the dock's settings),
then the next scan opened and Predict clicked, as a user moves on. The dock trains the model on
the finished scan in its training process meanwhile and refreshes the prediction when that
lands. Reports, per repeat, seconds from Predict to the first prediction and to the refreshed
one, and the Dice of each against the next scan's expert labels (mean over structures, the
whole scan; nothing is painted on it).

    xvfb-run -a .venv/bin/python benchmarks/between_scans_dock.py --repeats 2 \
        --out benchmarks/results/between_scans_dock.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_responsiveness import ROOT, pump  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SERIES = {  # first scan (a sample), next scan (shared data), structure names
    "acdc": ("sample_data/acdc/patient001_frame01.nii.gz",
             "sample_data/acdc/patient001_frame01_labels.nii.gz",
             DATA / "acdc/images/patient001_frame02.nii.gz",
             DATA / "acdc/labels/patient001_frame02.nii.gz", ["RV", "Myo", "LV"]),
}


def _wait(cond, timeout: float) -> float:
    """Pump the event loop until ``cond()``; returns the seconds it took."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the dock did not get there in time")
        pump(0.02)
    return time.perf_counter() - t0


def _mean_dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    from training.engine.metrics import dice

    return 100 * float(np.mean([dice(pred == c, truth == c) for c in range(1, classes + 1)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="acdc", choices=sorted(SERIES))
    ap.add_argument("--k", type=int, default=3, help="slices painted on the first scan")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/between_scans_dock.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-bench")

    import napari

    from napari_semiseg._series_dock import NEW_MODEL_STEPS
    from napari_semiseg._widget import NEW, dock_assistant
    from napari_semiseg.io import read_volume
    from training.interactive.interpolation import even_slices

    first, first_labels, nxt, nxt_labels, names = SERIES[args.series]
    truth = read_volume(ROOT / first_labels).data.astype(np.uint8)
    truth2 = read_volume(nxt_labels).data.astype(np.uint8)
    picks = even_slices(truth > 0, args.k)
    rows = []
    for r in range(args.repeats):
        viewer = napari.Viewer(show=True)
        widget = dock_assistant(viewer)
        viewer.open(str(ROOT / first), plugin="napari-semiseg")
        widget._refresh_images()
        widget.image_combo.setCurrentIndex(0)
        for i, name in enumerate(names, 1):
            if i > 1:
                widget.structures.add_structure()
            widget.structures.rename(i, name)
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        s = widget.session
        for z in picks:
            s.mark_labelled(0, int(z), truth[z])
        widget.show_session()
        widget.retrain_btn.click()
        _wait(lambda w=widget: not w.training and not w.jobs.busy, 1800)
        viewer.open(str(nxt), plugin="napari-semiseg")
        widget._refresh_images()
        widget.image_combo.setCurrentText(viewer.layers[-1].name)
        t0 = time.perf_counter()
        widget.predict()
        s2 = widget.session
        _wait(lambda w=widget, s2=s2: s2.uncertainty is not None and not w.jobs.busy, 600)
        t_first = time.perf_counter() - t0
        d_first = _mean_dice(s2.prediction, truth2, len(names))
        steps = widget.between.steps
        _wait(lambda w=widget, s2=s2: len(s2.versions) > 1 and not w.between.running
              and not w.jobs.busy, 1800)
        t_refreshed = time.perf_counter() - t0
        d_refreshed = _mean_dice(s2.prediction, truth2, len(names))
        rows.append((t_first, t_refreshed, d_first, d_refreshed))
        print(f"repeat {r + 1}: first prediction {t_first:.1f} s (Dice {d_first:.1f}), "
              f"refreshed after {t_refreshed:.1f} s (Dice {d_refreshed:.1f})", flush=True)
        widget.bridge.close()
        viewer.close()
    lines = [
        "# Training between scans through the dock: the next scan's prediction", "",
        f"Command: `xvfb-run -a .venv/bin/python benchmarks/between_scans_dock.py "
        f"{' '.join(sys.argv[1:])}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch CPU. First scan "
        f"{first}: New model ({', '.join(names)}), {args.k} slices painted from the expert "
        f"labels ({', '.join(map(str, picks))}), Retrain with the dock's settings "
        f"({NEW_MODEL_STEPS} steps). Next scan {Path(nxt).name}: Predict clicked at once; the "
        f"dock trains {steps} steps between scans meanwhile and refreshes the prediction. "
        f"Dice: mean over structures, whole scan, nothing painted on it.", "",
        "| repeat | first prediction s | its Dice | refreshed prediction s | its Dice |",
        "|---|---|---|---|---|",
    ]
    for i, (tf, tr, df, dr) in enumerate(rows, 1):
        lines.append(f"| {i} | {tf:.1f} | {df:.1f} | {tr:.1f} | {dr:.1f} |")
    lines += ["", f"Median: first prediction {statistics.median(r[0] for r in rows):.1f} s, "
              f"refreshed {statistics.median(r[1] for r in rows):.1f} s after Predict."]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

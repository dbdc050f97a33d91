"""New model through the dock: seconds from Retrain to the first refreshed prediction.

Under a display (`xvfb-run -a`): a sample scan opened with the assistant docked, the Model
choice set to "New model", one structure named, K slices painted by copying the expert labels
(evenly spaced over the structure's extent, as a user would), then Retrain clicked with the
dock's own settings for a new model. Reports, per repeat, the time to the first refreshed
prediction on screen and to the end of the Retrain, and the Dice on the slices nobody painted.

    xvfb-run -a .venv/bin/python benchmarks/new_model_refresh.py --repeats 3 \
        --out benchmarks/results/new_model_refresh.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_responsiveness import ROOT, SCANS, pump, run_bridge  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", default="left_atrium", choices=sorted(SCANS))
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paint-seconds", type=float, default=20.0,
                    help="time between choosing New model and Retrain: a user paints K slices "
                         "(the dock readies its training process meanwhile)")
    ap.add_argument("--out", default="benchmarks/results/new_model_refresh.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-bench")

    import napari

    from napari_semiseg._series_dock import NEW_MODEL_STEPS
    from napari_semiseg._widget import FIRST_PREVIEW_S, NEW, dock_assistant
    from napari_semiseg.io import read_volume
    from training.engine.metrics import dice
    from training.interactive.interpolation import even_slices, interpolate_between_slices

    truth = read_volume(ROOT / SCANS[args.scan][1]).data.astype(np.uint8)
    picks = even_slices(truth, args.k)
    rest = np.setdiff1d(np.arange(len(truth)), picks)
    sparse = np.full(truth.shape, 255, np.uint8)
    sparse[picks] = truth[picks]
    filled = interpolate_between_slices(sparse, picks)  # "fill between slices" on the same K
    interp = dice(filled[rest] == 1, truth[rest] == 1)
    rows = []
    for r in range(args.repeats):
        viewer = napari.Viewer(show=True)
        widget = dock_assistant(viewer)
        viewer.open(str(ROOT / SCANS[args.scan][0]), plugin="napari-semiseg")
        widget._refresh_images()
        widget.image_combo.setCurrentIndex(0)
        widget.structures.rename(1, "structure")
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        s = widget.session
        pump(args.paint_seconds)
        for z in picks:
            s.mark_labelled(0, int(z), truth[z])
        first_dice: list[float] = []
        handle = widget._handle_event

        def scored(ev, handle=handle, s=s, first_dice=first_dice):
            handle(ev)
            if ev.get("type") == "prediction" and not first_dice:
                first_dice.append(100 * dice(s.prediction[rest] == 1, truth[rest] == 1))

        widget._handle_event = scored
        gaps, first, total, _ = run_bridge(widget, NEW_MODEL_STEPS)
        widget._handle_event = handle
        final = dice(s.prediction[rest] == 1, truth[rest] == 1)
        rows.append((first, total, first_dice[0] if first_dice else float("nan"), 100 * final,
                     gaps["max"], gaps["worst_at"], gaps["handlers"]))
        print(f"repeat {r + 1}: first refresh {first:.1f} s, total {total:.1f} s, "
              f"Dice {100 * final:.1f}; {gaps}", flush=True)
        widget.bridge.close()
        viewer.close()
    shape = "×".join(map(str, truth.shape))
    firsts = [x[0] for x in rows]
    lines = [
        "# New model through the dock: first refreshed prediction after Retrain", "",
        f"Command: `xvfb-run -a .venv/bin/python benchmarks/new_model_refresh.py "
        f"{' '.join(sys.argv[1:])}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch CPU. Scan "
        f"{SCANS[args.scan][0]} ({shape}); New model, one structure, {args.k} slices painted "
        f"from the expert labels ({', '.join(map(str, picks))}); Retrain with the dock's "
        f"settings for a new model ({NEW_MODEL_STEPS} steps, a first preview after "
        f"{FIRST_PREVIEW_S:.0f} s of training, then every third). {args.paint_seconds:.0f} s "
        f"pass between choosing New model and Retrain, as the user paints.", "",
        "| repeat | first refresh s | its Dice | Retrain total s | final Dice | "
        "longest UI gap ms | at s after Retrain | slowest handler per event, ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (first, total, fdice, final, gap, at, handlers) in enumerate(rows, 1):
        lines.append(f"| {i} | {first:.1f} | {fdice:.1f} | {total:.1f} | {final:.1f} | "
                     f"{gap:.0f} | {at:.1f} | {handlers} |")
    lines += ["", f"Median first refresh: {statistics.median(firsts):.1f} s (target ≤ 30 s). "
              f"Shape-based interpolation between the same {args.k} slices: Dice "
              f"{100 * interp:.1f} on the unpainted slices. Dice is on the slices nobody painted."]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How the napari window behaves while Retrain runs (run under a display, e.g. `xvfb-run -a`).

For each scan, with the assistant docked and the shipped model:
1. Predict, then "correct" K slices by copying the expert labels (the simulated clinician);
2. click Retrain and measure, with a 10 ms heartbeat QTimer, the gaps of the Qt event loop;
   the time from the click to the first refreshed prediction; the peak RSS of the training
   process;
3. for comparison, run the same retrain inside the UI process: on a Python thread (what
   in-process tools do), and on the UI thread itself.

    xvfb-run -a .venv/bin/python benchmarks/ui_responsiveness.py --steps 30 \
        --out benchmarks/results/ui_responsiveness.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
SCANS = {
    "acdc": ("sample_data/acdc/patient001_frame01.nii.gz",
             "sample_data/acdc/patient001_frame01_labels.nii.gz"),
    "left_atrium": ("sample_data/left_atrium/UPT6DX9IQY9JAZ7HJKA7.nii.gz",
                    "sample_data/left_atrium/UPT6DX9IQY9JAZ7HJKA7_labels.nii.gz"),
}


class Heartbeat:
    """A 10 ms QTimer; a late tick means the event loop was blocked for that long."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        self.ticks.append(time.perf_counter())
        gaps = np.diff(self.ticks) * 1000
        return {"p50": float(np.percentile(gaps, 50)), "p99": float(np.percentile(gaps, 99)),
                "max": float(gaps.max()), "n": len(gaps)}


def pump(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def wait_for(cond, timeout: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("benchmark step timed out")
        QApplication.processEvents()
        time.sleep(0.002)


def prepare(viewer, widget, scan: str, k: int):
    from napari_semiseg.io import read_volume

    img_path, lab_path = (ROOT / p for p in SCANS[scan])
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    widget.session = None
    viewer.open(str(img_path), plugin="napari-semiseg")
    widget._refresh_images()
    widget.image_combo.setCurrentIndex(0)
    widget.predict()
    wait_for(lambda: widget._worker is None and widget.session is not None
             and widget.session.uncertainty is not None, 600)
    truth = read_volume(lab_path).data
    s = widget.session
    n = s.image.shape[0]
    picks = [int(round(x)) for x in np.linspace(0, n - 1, k + 2)[1:-1]]
    for z in picks:
        s.mark_labelled(0, z, truth[z].astype(np.uint8))
    viewer.layers["prediction"].refresh()
    return s, picks


def run_in_process(widget, steps: int, on_ui_thread: bool) -> tuple[dict, float]:
    """The same retrain job, run inside the napari process (the design we avoid)."""
    from napari_semiseg.retrain_job import make_job, run_retrain

    job = make_job(widget.session, method=widget.retrain_form.method.value, steps=steps,
                   preview_every=max(1, steps // 3))
    hb = Heartbeat()
    first: list[float] = []
    t0 = time.perf_counter()

    def emit(ev):
        if ev.get("type") == "prediction" and not first:
            first.append(time.perf_counter() - t0)

    hb.start()
    if on_ui_thread:
        pump(0.3)
        t0 = time.perf_counter()
        run_retrain(job, emit, lambda: False)
        pump(0.3)
    else:
        th = threading.Thread(target=run_retrain, args=(job, emit, lambda: False))
        pump(0.3)
        t0 = time.perf_counter()
        th.start()
        while th.is_alive():
            pump(0.05)
        pump(0.3)
    return hb.stop(), (first[0] if first else float("nan"))


def run_bridge(widget, steps: int) -> tuple[dict, float, float, float]:
    """Click Retrain; returns gaps, seconds to first refresh, total seconds, peak child RSS."""
    widget.retrain_form.steps.value = steps
    first: list[float] = []
    handle = widget._handle_event

    slow: dict[str, float] = {}

    def spy(ev):
        t = time.perf_counter()
        handle(ev)
        kind = ev.get("type", "?")
        slow[kind] = max(slow.get(kind, 0.0), (time.perf_counter() - t) * 1000)
        if kind in ("prediction", "done") and not first:
            first.append(time.perf_counter() - t0)

    widget._handle_event = spy
    hb = Heartbeat()
    hb.start()
    pump(0.3)
    peak = 0
    t0 = time.perf_counter()
    widget.retrain_btn.click()
    slow["Retrain click"] = (time.perf_counter() - t0) * 1000  # job snapshot, process start
    while widget.training:
        pump(0.05)
        pid = widget.bridge.pid
        try:
            if pid:
                peak = max(peak, psutil.Process(pid).memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    total = time.perf_counter() - t0
    pump(0.3)
    widget._handle_event = handle
    gaps = hb.stop()
    gaps["handlers"] = ", ".join(f"{k} {v:.0f}" for k, v in sorted(slow.items()))
    gaps["worst_at"] = hb.ticks[int(np.argmax(np.diff(hb.ticks)))] - t0
    return gaps, (first[0] if first else float("nan")), total, peak / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--corrections", type=int, default=3)
    ap.add_argument("--method", default="mean_teacher")
    ap.add_argument("--scans", default="acdc,left_atrium")
    ap.add_argument("--compare", default="acdc", help="scans also run in-process, to compare")
    ap.add_argument("--out", default="benchmarks/results/ui_responsiveness.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-bench")

    import napari

    from napari_semiseg._widget import dock_assistant

    viewer = napari.Viewer(show=True)
    widget = dock_assistant(viewer)
    widget.retrain_form.method.value = args.method
    rows = []
    wall = time.perf_counter()
    for scan in args.scans.split(","):
        s, picks = prepare(viewer, widget, scan, args.corrections)
        shape = "×".join(map(str, s.image.shape))
        gaps, first, total, peak = run_bridge(widget, args.steps)
        rows.append((scan, shape, "separate process (the plugin)", gaps, first, total, peak))
        print(rows[-1], flush=True)
        if scan in args.compare.split(","):
            for ui in (False, True):
                gaps, first = run_in_process(widget, args.steps, ui)
                where = "UI thread" if ui else "Python thread in the UI process"
                rows.append((scan, shape, where, gaps, first, float("nan"), float("nan")))
                print(rows[-1], flush=True)
    wall = time.perf_counter() - wall
    viewer.close()

    lines = [
        "# UI responsiveness while Retrain runs",
        "",
        f"Command: `xvfb-run -a .venv/bin/python benchmarks/ui_responsiveness.py "
        f"{' '.join(sys.argv[1:])}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; torch CPU; wall time {wall:.0f} s.",
        f"Retrain: method `{args.method}`, {args.steps} steps, shipped model, "
        f"{args.corrections} corrected slices (expert labels copied), preview every "
        f"{max(1, args.steps // 3)} steps.",
        "",
        "Event-loop gaps come from a 10 ms heartbeat QTimer (a gap of 10 ms means no blocking). "
        "'First refresh' is the time from the click to the first refreshed prediction on "
        "screen. Peak RSS is the training process's (separate process only).",
        "",
        "| scan | shape (z×y×x) | where training runs | gap p50 ms | gap p99 ms | gap max ms "
        "| first refresh s | retrain total s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scan, shape, where, g, first, total, peak in rows:
        lines.append(f"| {scan} | {shape} | {where} | {g['p50']:.1f} | {g['p99']:.1f} | "
                     f"{g['max']:.0f} | {first:.1f} | {total:.1f} | {peak:.0f} |")
    lines += ["", "Slowest handling of each event kind on the UI thread (ms), and when the longest "
              "gap happened (s after the click):", ""]
    for scan, _, _where, g, *_ in rows:
        if "handlers" in g:
            lines.append(f"- {scan}: {g['handlers']}; longest gap at {g['worst_at']:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

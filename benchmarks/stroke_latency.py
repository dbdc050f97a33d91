"""How long one brush stroke holds the UI thread, with autosave inline vs on the writer thread.

Under a display (`xvfb-run -a`): the assistant docked on a sample scan, Predict, then N strokes
painted on the `prediction` layer through napari's own `Labels.paint`, which fires the dock's
paint handler (mark the slice labelled, autosave). Each stroke's wall time on the UI thread is
recorded; the two modes alternate stroke by stroke so that machine load hits both alike.

    xvfb-run -a .venv/bin/python benchmarks/stroke_latency.py --strokes 40 \
        --out benchmarks/results/stroke_latency.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_responsiveness import ROOT, SCANS, wait_for  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=40)
    ap.add_argument("--scan", default="left_atrium", choices=sorted(SCANS))
    ap.add_argument("--out", default="benchmarks/results/stroke_latency.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("NAPARI_SEMISEG_HOME", "/tmp/napari-semiseg-bench")

    import napari

    from napari_semiseg._widget import dock_assistant
    from napari_semiseg.autosave import BackgroundWriter

    viewer = napari.Viewer(show=True)
    widget = dock_assistant(viewer)
    viewer.open(str(ROOT / SCANS[args.scan][0]), plugin="napari-semiseg")
    widget._refresh_images()
    widget.image_combo.setCurrentIndex(0)
    widget.predict()
    wait_for(lambda: widget._worker is None and widget.session is not None
             and widget.session.uncertainty is not None, 600)
    s = widget.session
    layer = viewer.layers["prediction"]
    layer.brush_size = 8
    writer = s._writer
    assert isinstance(writer, BackgroundWriter)  # the dock turned it on
    times: dict[str, list[float]] = {"writer thread (the plugin)": [], "inline (before)": []}
    n, h, w = s.image.shape
    for i in range(2 * args.strokes):
        background = i % 2 == 0
        s._writer = writer if background else None
        z = i % n
        widget.go_to_slice(z)
        t0 = time.perf_counter()
        layer.paint((z, h // 2 + (i % 7), w // 2), 1)
        times["writer thread (the plugin)" if background else "inline (before)"].append(
            time.perf_counter() - t0)
        s._writer = writer
        s.flush()  # each stroke starts from an idle disk in both modes
    viewer.close()
    shape = "×".join(map(str, s.image.shape))
    lines = [
        "# Brush-stroke latency: autosave on the UI thread vs on the writer thread", "",
        f"Command: `xvfb-run -a .venv/bin/python benchmarks/stroke_latency.py "
        f"{' '.join(sys.argv[1:])}`", "",
        f"Scan: {SCANS[args.scan][0]} ({shape}); {args.strokes} strokes per mode, "
        "alternating; each stroke's time inside `Labels.paint` on the UI thread (the paint "
        "handler marks the slice and autosaves the label volumes, verified write).", "",
        "| autosave | median ms | p90 ms | max ms |", "|---|---|---|---|",
    ]
    for mode, t in times.items():
        ms = sorted(1000 * x for x in t)
        lines.append(f"| {mode} | {statistics.median(ms):.1f} | "
                     f"{ms[int(0.9 * (len(ms) - 1))]:.1f} | {ms[-1]:.1f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

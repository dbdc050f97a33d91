"""`python -m napari_semiseg`: open napari with a sample scan (and the assistant, when present)."""

from __future__ import annotations

import argparse
import sys

from ._sample_data import SAMPLES, sample_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-semiseg",
        description="Open napari with napari-semiseg on a scan: the demo of `make demo`.",
    )
    p.add_argument("path", nargs="?", help="scan to open (file, DICOM folder or PNG folder); "
                   "default: the sample chosen by --sample")
    p.add_argument("--sample", choices=sorted(SAMPLES), default="acdc",
                   help="which shipped sample to open when no path is given (default: acdc)")
    p.add_argument("--with-labels", action="store_true",
                   help="also open the sample's expert labels")
    p.add_argument("--no-predict", action="store_true",
                   help="do not run the shipped model on the scan at start")
    p.add_argument("--screenshot", metavar="PNG",
                   help="save a screenshot of the window to PNG and quit (for docs and tests)")
    return p


def open_viewer(args: argparse.Namespace):
    import napari

    viewer = napari.Viewer(title="napari-semiseg")
    if args.path:
        viewer.open(args.path, plugin="napari-semiseg")
    else:
        paths = SAMPLES[args.sample] if args.with_labels else SAMPLES[args.sample][:1]
        for rel in paths:
            viewer.open(str(sample_dir() / rel), plugin="napari-semiseg")
    viewer.window._qt_window.resize(1500, 950)
    from qtpy.QtWidgets import QApplication

    from ._widget import dock_assistant

    widget = dock_assistant(viewer)
    for _ in range(5):  # let the window take its size and the dock its width
        QApplication.processEvents()
    viewer.reset_view()  # then fit the scan to the canvas that is left (fitted before the
    # dock, the left-atrium sample opened at 1.6x, cut off at both sides)
    if not args.no_predict and widget._selected_image() is not None:
        widget.predict()
    return viewer, widget


def _settle(widget, timeout_s: float = 300.0) -> None:
    """Let a started prediction finish and the window draw (screenshot mode only)."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.jobs.busy and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        viewer, widget = open_viewer(args)
    except Exception as e:  # a bad path must read as a message, not a traceback
        print(f"napari-semiseg: {e}", file=sys.stderr)
        return 1
    if args.screenshot:
        _settle(widget)
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        print(f"saved {args.screenshot}")
        return 0
    import napari

    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

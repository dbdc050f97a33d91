"""Sliding windows of the trained patch, or one window per slice: Dice and seconds, on val scans.

A native-grid 2-D model predicts a slice larger than its patch in overlapping Gaussian-weighted
windows. Up to a factor times the patch (the model's ``meta["whole_slice_up_to"]``, default
``WHOLE_SLICE_UP_TO``), the slice can instead go through the network whole
(``training.engine.inference.prediction_window``). This scores each setting by
the card's 3-D Dice per scan (with the model's clean-up) and times the dock's Predict, one
setting after another on the same scans.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python benchmarks/window_choice.py \
        --model napari_semiseg/models/acdc_unet2d.pt --data ../shared/data/acdc --split val \
        --settings 1.0 2.0 --out benchmarks/results/window_choice_acdc_val.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
from held_out import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--patients", default="", help="comma-separated patients instead of a split")
    p.add_argument("--settings", nargs="+", type=float, default=[1.0, 2.0],
                   help="whole-slice factors to compare (1 = patch windows)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import training.engine.inference as inf
    from training.engine.checkpoint import load_checkpoint
    from training.engine.metrics import mean_dice
    from training.library.model_card import dataset_scans

    model, meta = load_checkpoint(a.model, device="cpu")
    patients = [s for s in a.patients.split(",") if s] or None
    scans = list(dataset_scans(a.data, a.split or None, patients))
    rows = {s: [] for s in a.settings}
    for name, im, lab, _, _ in scans:
        for s in a.settings:
            as_set = {**meta, "whole_slice_up_to": s}
            t0 = time.perf_counter()
            out = inf.predict_volume(model, as_set, im, probabilities=False)
            sec = time.perf_counter() - t0
            rows[s].append((name, 100 * mean_dice(out["labels"], lab), sec,
                            inf.prediction_window(as_set, im.shape[1:])))
        print(name, {s: f"{rows[s][-1][1]:.1f} ({rows[s][-1][2]:.2f} s)" for s in a.settings},
              flush=True)
    base = np.array([r[1] for r in rows[a.settings[0]]])
    lines = ["# Prediction window: the trained patch or the whole slice (val scans only)", "",
             f"- command: `PYTHONPATH=. python benchmarks/window_choice.py "
             f"{' '.join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))}`",
             f"- model: {a.model} (patch {meta['size']}); {len(scans)} scans; 3-D Dice per scan "
             "(mean over classes, with the model's clean-up); seconds of the dock's Predict "
             "(labels + uncertainty), settings run one after another on each scan", "",
             "| whole slice up to | Dice mean ± SD | vs first: better / worse | median s |",
             "|---|---|---|---|"]
    for s in a.settings:
        d = np.array([r[1] for r in rows[s]])
        lines.append(f"| {s:g} | {d.mean():.2f} ± {d.std():.1f} | {int((d > base).sum())} / "
                     f"{int((d < base).sum())} | {np.median([r[2] for r in rows[s]]):.2f} |")
    lines += ["", "| scan | " + " | ".join(f"{s:g}: Dice, window" for s in a.settings) + " |",
              "|---|" + "---|" * len(a.settings)]
    for i, (name, *_rest) in enumerate(rows[a.settings[0]]):
        lines.append(f"| {name} | " + " | ".join(
            f"{rows[s][i][1]:.1f}, {rows[s][i][3]}" for s in a.settings) + " |")
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

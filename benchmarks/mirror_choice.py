"""Test-time mirroring: each slice predicted as it is and mirrored left-right, averaged.

Scores a 2-D native-grid model on held-out scans with and without ``meta["test_time_mirror"]``
(the card's 3-D Dice per scan, mean over classes, with the model's own clean-up), and times the
dock's Predict (labels + uncertainty) both ways, one after the other on each scan. Choose on
val patients only; the shipped model's card then records the choice.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python benchmarks/mirror_choice.py \\
        --model runs/lib_lgg_tr16k.pt --data ../shared/data/lgg_brain_mri_2d \\
        --patients <the 5 val patients of benchmarks/splits/lgg.json> --out runs/mirror.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
from held_out import add_arguments, model_and_scans, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    a = p.parse_args(argv)

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95

    model, meta, scans = model_and_scans(a)
    n = int(meta["num_classes"])
    rows = []
    for name, im, lab, sp, _ in scans:
        row = [name]
        for mirror in (False, True):
            t0 = time.perf_counter()
            pred = predict_volume(model, {**meta, "test_time_mirror": mirror}, im, device="cpu",
                                  probabilities=False)["labels"]
            sec = time.perf_counter() - t0
            r = dice_hd95(pred, lab, classes_to_score([(pred, lab)], n), sp)
            row += [100 * float(np.mean(r["dice"])), sec]
        rows.append(row)
        print(f"{name}: {row[1]:.1f} -> {row[3]:.1f} ({row[2]:.2f} s -> {row[4]:.2f} s)",
              flush=True)
    if not rows:
        print("no scans with labels found", file=sys.stderr)
        return 2
    plain, mirrored = np.array([r[1] for r in rows]), np.array([r[3] for r in rows])
    cmd = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    lines = ["# Test-time mirroring, chosen on held-out scans", "",
             f"- command: `PYTHONPATH=. python benchmarks/mirror_choice.py {cmd}`",
             f"- model: {a.model}; {len(rows)} scans; 3-D Dice per scan (mean over classes, "
             f"with the model's clean-up, {meta.get('postprocess') or 'none'}); seconds of the "
             "dock's Predict (labels + uncertainty)", "",
             "| scan | Dice | Dice, mirrored | s | s, mirrored |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.1f} | {r[3]:.1f} | {r[2]:.2f} | {r[4]:.2f} |" for r in rows]
    lines += [f"| **mean ± SD** | **{plain.mean():.2f} ± {plain.std():.1f}** | "
              f"**{mirrored.mean():.2f} ± {mirrored.std():.1f}** | "
              f"{np.median([r[2] for r in rows]):.2f} (median) | "
              f"{np.median([r[4] for r in rows]):.2f} (median) |", "",
              f"- mirrored − plain: {mirrored.mean() - plain.mean():+.2f} mean; better on "
              f"{int((mirrored > plain).sum())}, worse on {int((mirrored < plain).sum())} of "
              f"{len(rows)}"]
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

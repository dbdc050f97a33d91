"""Predict-time scales (``meta["test_time_scales"]``) chosen on out-of-fold patients.

Each ``--fold MODEL=P1,P2,...`` names a model and the patients it never trained on. Every
patient is predicted once at each scale named in ``--arms`` (Predict's own path,
``training.engine.inference``); an arm averages its scales' probabilities on the scan's grid,
as Predict does with that card setting, then takes the argmax and the model's own clean-up
(its card's ``postprocess``). The first arm is the base every other is compared with.

    OMP_NUM_THREADS=1 PYTHONPATH=benchmarks:. .venv/bin/python benchmarks/folds_scales_choice.py \\
        --data ../shared/data/lgg_brain_mri_2d --fold runs/f0.pt=P1,P2 --fold runs/f1.pt=P3 \\
        --arms 1 1,0.75 1,0.6 --out runs/folds_scales.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
from held_out import add_fold_arguments, fold_scans, fold_table, write_report


def parse_arm(text: str) -> tuple[float, ...]:
    """``"1,0.75"`` -> (1.0, 0.75)."""
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"an arm is scales separated by commas, not {text!r}") from None
    if not scales or any(not 0.25 <= s <= 4.0 for s in scales):
        raise argparse.ArgumentTypeError(f"scales must lie in [0.25, 4]: {text!r}")
    return scales


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(p)
    p.add_argument("--arms", type=parse_arm, nargs="+", default=[(1.0,), (1.0, 0.75)],
                   metavar="S[,S...]", help="each arm's scales; the first is the base")
    p.add_argument("--clean-up", default="model", metavar="MODE",
                   help="the clean-up after the argmax: the model's own (default) or one of "
                        "none, foreground, per_class, small_pieces (fold models carry none; "
                        "the shipped LGG card's is small_pieces)")
    a = p.parse_args(argv)

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import POSTPROCESS_MODES, keep_main_pieces, model_clean_up

    if a.clean_up not in ("model", *POSTPROCESS_MODES):
        p.error(f"--clean-up must be model or one of {', '.join(POSTPROCESS_MODES)}")

    scales = sorted({s for arm in a.arms for s in arm}, reverse=True)
    rows, t0 = [], time.time()
    for k, model, meta, scans in fold_scans(p, a):
        n = int(meta["num_classes"])
        mode = model_clean_up(meta) if a.clean_up == "model" else a.clean_up
        for name, im, lab, sp, _ in scans:
            probs = {s: predict_volume(model, {**meta, "test_time_scales": [s]}, im,
                                       device="cpu", clean_up=False)["probabilities"]
                     for s in scales}
            row = []
            for arm in a.arms:
                mean = np.mean([probs[s] for s in arm], 0)
                out = keep_main_pieces(mean.argmax(0).astype(np.uint8), mode)
                r = dice_hd95(out, lab, classes_to_score([(out, lab)], n), sp)
                row.append(100 * float(np.mean(r["dice"])))
            rows.append((k, name, row))
            print(k, name, [round(v, 1) for v in row], flush=True)
    cmd = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    columns = ["scales " + " + ".join(f"{s:g}" for s in arm) for arm in a.arms]
    lines = ["# Predict-time scales, chosen on out-of-fold patients", "",
             f"- command: `PYTHONPATH=benchmarks:. python benchmarks/folds_scales_choice.py "
             f"{cmd}`",
             f"- {len(rows)} patients in {len(a.fold)} folds; each scored by the model that "
             f"never trained on it; 3-D Dice per scan, mean over classes, after the "
             f"clean-up ({a.clean_up}); {time.time() - t0:.0f} s",
             "", *fold_table(rows, columns, len(a.fold), columns[0])]
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

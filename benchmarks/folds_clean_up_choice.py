"""A clean-up of the prediction chosen on out-of-fold scans, not on one small val split.

Each ``--fold MODEL=P1,P2,...`` names a model and the patients it never trained on. Every
patient is predicted once, as the dock's Predict does (no clean-up), and scored by the card's
3-D Dice per scan with: nothing dropped, the largest piece alone, and pieces under 10 % / 25 %
of the largest dropped (``training.engine.postprocess``).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/folds_clean_up_choice.py \\
        --data ../shared/data/lgg_brain_mri_2d --fold runs/f0.pt=P1,P2 --fold runs/f1.pt=P3,P4 \\
        --out runs/folds_clean_up.md
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from held_out import add_fold_arguments, fold_report, fold_scans, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(p)
    a = p.parse_args(argv)

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import drop_small_pieces, keep_main_pieces

    clean = {"none": lambda x: x,
             "largest piece": lambda x: keep_main_pieces(x, "foreground"),
             "drop < 10 %": lambda x: drop_small_pieces(x, 0.10),
             "drop < 25 %": lambda x: drop_small_pieces(x, 0.25)}  # "none" first: the base
    rows, t0 = [], time.time()
    for k, model, meta, scans in fold_scans(p, a):
        n = int(meta["num_classes"])
        for name, im, lab, sp, _ in scans:
            pred = predict_volume(model, {**meta, "postprocess": "none"}, im,
                                  device="cpu", probabilities=False)["labels"]
            scores = []
            for clean_up in clean.values():
                out = clean_up(pred)
                r = dice_hd95(out, lab, classes_to_score([(out, lab)], n), sp)
                scores.append(100 * float(np.mean(r["dice"])))
            rows.append((k, name, scores))
            print(k, name, [round(s, 1) for s in scores], flush=True)
    lines = fold_report("Clean-up of the prediction, chosen on out-of-fold patients",
                        "folds_clean_up_choice.py", argv, len(a.fold), rows, list(clean),
                        "3-D Dice per scan, mean over classes", t0)
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Predict-time options of a binary model chosen on out-of-fold patients.

Each ``--fold MODEL=P1,P2,...`` names a model and the patients it never trained on. Every
patient is predicted twice (as it is, and averaged with its left-right mirror), and each
option is scored by the card's 3-D Dice per scan. Every option ends with the small-pieces
clean-up the shipped LGG card uses; "base" is that card's Predict.

Options: z-smooth (foreground probability averaged with the neighbouring slices, 1/4-1/2-1/4,
before the 0.5 threshold), mirror, both, 2-D holes filled in each slice, and 3-D pieces whose
mean foreground probability is under 0.7 dropped (the largest always kept); with
``--thresholds``, the structure called above each probability T instead of 0.5.

    OMP_NUM_THREADS=1 PYTHONPATH=benchmarks:. .venv/bin/python \\
        benchmarks/folds_predict_options.py \\
        --data ../shared/data/lgg_brain_mri_2d --fold runs/f0.pt=P1,P2 --fold runs/f1.pt=P3 \\
        --out runs/folds_predict_options.md
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from held_out import add_fold_arguments, fold_report, fold_scans, write_report
from scipy import ndimage

SURE = 0.7  # mean foreground probability under which a 3-D piece is dropped (option C5)


def z_smooth(fg: np.ndarray) -> np.ndarray:
    """Foreground probability (z, y, x) averaged with its neighbouring slices, 1/4-1/2-1/4;
    an edge slice averages with its one neighbour, weights renormalised."""
    if fg.shape[0] < 2:
        return fg
    num = 0.5 * fg.copy()
    den = np.full((fg.shape[0], 1, 1), 0.5, np.float32)
    num[1:] += 0.25 * fg[:-1]
    num[:-1] += 0.25 * fg[1:]
    den[1:] += 0.25
    den[:-1] += 0.25
    return num / den


def fill_slice_holes(labels: np.ndarray) -> np.ndarray:
    """Each slice's 2-D holes in the foreground filled with the foreground class."""
    out = labels.copy()
    for z in range(labels.shape[0]):
        fg = labels[z] != 0
        out[z][ndimage.binary_fill_holes(fg) & ~fg] = 1
    return out


def drop_unsure_pieces(labels: np.ndarray, fg: np.ndarray, sure: float = SURE) -> np.ndarray:
    """3-D pieces (26-connected) whose mean foreground probability is under ``sure`` dropped;
    the largest piece stays."""
    pieces, n = ndimage.label(labels != 0, np.ones((3, 3, 3), bool))
    if n <= 1:
        return labels
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(fg), pieces, idx)
    means = ndimage.mean(fg, pieces, idx)
    drop = idx[(means < sure) & (sizes < sizes.max())]
    return np.where(np.isin(pieces, drop), 0, labels).astype(labels.dtype)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(p)
    p.add_argument("--thresholds", type=float, nargs="*", default=[], metavar="T",
                   help="also score calling the structure where its probability is above T "
                        "(the argmax of two classes is 0.5)")
    a = p.parse_args(argv)

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import SMALL_PIECE_SHARE, drop_small_pieces

    def clean(fg: np.ndarray, t: float = 0.5) -> np.ndarray:
        return drop_small_pieces((fg > t).astype(np.uint8), SMALL_PIECE_SHARE)

    options = {
        "base": lambda fg, fgm: clean(fg),
        "z-smooth": lambda fg, fgm: clean(z_smooth(fg)),
        "mirror": lambda fg, fgm: clean(fgm),
        "mirror + z-smooth": lambda fg, fgm: clean(z_smooth(fgm)),
        "holes filled": lambda fg, fgm: fill_slice_holes(clean(fg)),
        f"unsure pieces (< {SURE})": lambda fg, fgm: drop_unsure_pieces(clean(fg), fg),
    }  # "base" first: every other option is compared with it
    for t in a.thresholds:
        options[f"threshold {t:g}"] = lambda fg, fgm, t=t: clean(fg, t)
    rows, t0 = [], time.time()
    for k, model, meta, scans in fold_scans(p, a):
        if int(meta["num_classes"]) != 2:
            p.error(f"fold {k}: these options are for one structure and background")
        for name, im, lab, sp, _ in scans:
            fg, fgm = (predict_volume(model, {**meta, "postprocess": "none",
                                              "test_time_mirror": m}, im, device="cpu",
                                      clean_up=False)["probabilities"][1] for m in (False, True))
            scores = []
            for option in options.values():
                out = option(fg, fgm)
                r = dice_hd95(out, lab, classes_to_score([(out, lab)], 2), sp)
                scores.append(100 * float(np.mean(r["dice"])))
            rows.append((k, name, scores))
            print(k, name, [round(s, 1) for s in scores], flush=True)
    lines = fold_report("Predict-time options, chosen on out-of-fold patients",
                        "folds_predict_options.py", argv, len(a.fold), rows, list(options),
                        "3-D Dice per scan; every option ends with the small-pieces clean-up", t0)
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

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
import shlex
import sys
import time

import numpy as np
from held_out import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--fold", action="append", required=True, metavar="MODEL=P1,P2,...")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import drop_small_pieces, keep_main_pieces
    from training.library.model_card import dataset_scans

    clean = {"none": lambda x: x,
             "largest piece": lambda x: keep_main_pieces(x, "foreground"),
             "drop < 10 %": lambda x: drop_small_pieces(x, 0.10),
             "drop < 25 %": lambda x: drop_small_pieces(x, 0.25)}  # "none" first: the base
    rows, t0 = [], time.time()
    for k, spec in enumerate(a.fold):
        path, _, names = spec.partition("=")
        patients = [s for s in names.split(",") if s]
        if not patients:
            p.error(f"--fold {spec!r} names no patients")
        model, meta = load_checkpoint(path, device="cpu")
        n = int(meta["num_classes"])
        scans = list(dataset_scans(a.data, None, patients,
                                   keep_channels=model_channels(meta) > 1))
        if len(scans) != len(patients):
            p.error(f"fold {k}: {len(scans)} labelled scans found for {len(patients)} patients")
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
    s = np.array([r[2] for r in rows])
    folds = np.array([r[0] for r in rows])
    cmd = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    lines = ["# Clean-up of the prediction, chosen on out-of-fold patients", "",
             f"- command: `PYTHONPATH=. python benchmarks/folds_clean_up_choice.py {cmd}`",
             f"- {len(rows)} patients in {len(a.fold)} folds; each scored by the model that "
             f"never trained on it; 3-D Dice per scan, mean over classes; {time.time() - t0:.0f} s",
             "", "| fold | patient | " + " | ".join(clean) + " |",
             "|---|---|" + "---|" * len(clean)]
    lines += [f"| {k} | {name} | " + " | ".join(f"{v:.1f}" for v in sc) + " |"
              for k, name, sc in rows]
    lines.append("| | **mean ± sd** | " + " | ".join(
        f"**{m:.2f} ± {d:.1f}**" for m, d in zip(s.mean(0), s.std(0), strict=True)) + " |")
    lines.append("")
    for j, c in enumerate(list(clean)[1:], start=1):
        diff = s[:, j] - s[:, 0]
        fold_diff = [float(diff[folds == k].mean()) for k in range(len(a.fold))]
        lines.append(f"- {c} − none: mean {diff.mean():+.2f}; better on {(diff > 0).sum()}, "
                     f"worse on {(diff < 0).sum()} of {len(diff)} patients; lower on "
                     f"{sum(d < 0 for d in fold_diff)} of {len(fold_diff)} folds "
                     f"({', '.join(f'{d:+.2f}' for d in fold_diff)})")
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

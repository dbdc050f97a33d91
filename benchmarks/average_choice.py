"""Two networks' softmax averaged, against the first alone, on held-out scans.

Scores each model, and the mean of their probabilities, by the card's 3-D Dice per scan (mean
over classes, no clean-up). A model that reads one channel of an RGB scan gets its grey
channel, as every loader gives it. Choose on val patients only.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/average_choice.py \\
        --model A.pt --second B.pt --data ../shared/data/lgg_brain_mri_2d \\
        --patients <val patients> --out runs/average.md
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
from held_out import add_arguments, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--second", required=True, help="the model averaged with --model")
    a = p.parse_args(argv)

    from training.core.io import rgb_to_grey
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.library.model_card import dataset_scans

    models = [load_checkpoint(path, device="cpu") for path in (a.model, a.second)]
    n = int(models[0][1]["num_classes"])
    patients = [s for s in a.patients.split(",") if s] or None
    rows = []
    for name, im, lab, sp, _ in dataset_scans(a.data, a.split or None, patients,
                                                     keep_channels=True):
        probs = []
        for model, meta in models:
            x = im if model_channels(meta) > 1 or im.ndim == 3 else rgb_to_grey(im)
            probs.append(predict_volume(model, {**meta, "postprocess": "none"}, x,
                                        device="cpu")["probabilities"])
        row = [name]
        for pr in (probs[0], probs[1], (probs[0] + probs[1]) / 2):
            pred = pr.argmax(0).astype(np.uint8)
            r = dice_hd95(pred, lab, classes_to_score([(pred, lab)], n), sp)
            row.append(100 * float(np.mean(r["dice"])))
        rows.append(row)
        print(f"{name}: {row[1]:.1f} / {row[2]:.1f} -> {row[3]:.1f}", flush=True)
    if not rows:
        print("no scans with labels found", file=sys.stderr)
        return 2
    first, second, both = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    cmd = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    lines = ["# Two networks averaged, against the first alone, on held-out scans", "",
             f"- command: `PYTHONPATH=. python benchmarks/average_choice.py {cmd}`",
             f"- {len(rows)} scans; 3-D Dice per scan, mean over classes, no clean-up", "",
             "| scan | --model | --second | average |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.1f} |" for r in rows]
    lines += [f"| **mean ± SD** | **{first.mean():.2f} ± {first.std():.1f}** | "
              f"**{second.mean():.2f} ± {second.std():.1f}** | "
              f"**{both.mean():.2f} ± {both.std():.1f}** |", "",
              f"- average − --model: {both.mean() - first.mean():+.2f} mean; better on "
              f"{int((both > first).sum())}, worse on {int((both < first).sum())} of {len(rows)}"]
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

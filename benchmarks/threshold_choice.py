"""Foreground threshold of a two-class model: the argmax (0.5) against lower thresholds, on
held-out patients (the card's 3-D Dice per scan, no clean-up). Choose on val only.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/threshold_choice.py \\
        --models runs/lib_lgg_tr16k.pt runs/lib_lgg_tr_fg50.pt \\
        --data ../shared/data/lgg_brain_mri_2d --split-file benchmarks/splits/lgg.json:val
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split-file", required=True, help="<splits json>:<split>")
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 0.4, 0.3])
    a = p.parse_args(argv)

    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.library.model_card import dataset_scans

    path, split = a.split_file.rsplit(":", 1)
    patients = json.loads(open(path).read())[split]
    for m in a.models:
        model, meta = load_checkpoint(m, device="cpu")
        if int(meta["num_classes"]) != 2:
            p.error(f"{m}: a threshold needs a two-class model")
        res: dict[float, list[float]] = {t: [] for t in a.thresholds}
        for _, im, lab, sp, _ in dataset_scans(a.data, None, patients,
                                               keep_channels=model_channels(meta) > 1):
            fg = predict_volume(model, meta, im, device="cpu")["probabilities"][1]
            for t in res:
                pred = (fg > t).astype(np.uint8)
                r = dice_hd95(pred, lab, classes_to_score([(pred, lab)], 2), sp)
                res[t].append(100 * float(np.mean(r["dice"])))
        print(m)
        first = np.array(res[a.thresholds[0]])
        for t, v in res.items():
            d = np.array(v) - first
            print(f"  t={t}: mean {np.mean(v):.2f} ± {np.std(v):.1f}; per scan "
                  f"{[round(x, 1) for x in v]}; better {int((d > 0).sum())}, "
                  f"worse {int((d < 0).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

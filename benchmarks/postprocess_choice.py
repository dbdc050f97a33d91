"""Which clean-up of a shipped model's prediction to put on its card, chosen on held-out scans.

Predicts each scan once (the dock's Predict, without the clean-up the model already names) and
scores the labels as they are and with each clean-up of ``training.engine.postprocess``, by the
same 3-D Dice / HD95 per scan as the card.

    PYTHONPATH=. .venv/bin/python benchmarks/postprocess_choice.py --model M.pt --data DIR \
        --split val --out benchmarks/results/FILE.md
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from held_out import add_arguments, model_and_scans


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    a = p.parse_args(argv)

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import POSTPROCESS_MODES, keep_main_pieces

    model, meta, scans = model_and_scans(a)
    n = int(meta["num_classes"])
    rows, t0 = [], time.time()
    for name, im, lab, sp, _ in scans:
        pred = predict_volume(model, meta, im, device="cpu", probabilities=False,
                              clean_up=False)["labels"]  # the network's own labels
        scores = {}
        for mode in POSTPROCESS_MODES:
            r = dice_hd95(keep_main_pieces(pred, mode), lab, classes_to_score([(pred, lab)], n),
                          sp)
            scores[mode] = (100 * float(np.mean(r["dice"])), float(np.mean(r["hd95"])))
        rows.append((name, scores))
        print(name, {m: round(s[0], 2) for m, s in scores.items()}, flush=True)
    if not rows:
        print("no scans with labels found", file=sys.stderr)
        return 2
    lines = ["# Clean-up of the prediction: chosen on held-out scans", "",
             "- command: `PYTHONPATH=. .venv/bin/python benchmarks/postprocess_choice.py "
             + " ".join(sys.argv[1:] if argv is None else argv) + "`",
             f"- model: {a.model}; scans: {len(rows)}; took {time.time() - t0:.0f} s",
             "- Dice: 3-D per scan, mean over classes; HD95 in mm (voxels where no spacing)", "",
             "| scan | " + " | ".join(f"{m}: Dice / HD95" for m in POSTPROCESS_MODES) + " |",
             "|---|" + "---|" * len(POSTPROCESS_MODES)]
    for name, s in rows:
        lines.append(f"| {name} | " + " | ".join(f"{s[m][0]:.1f} / {s[m][1]:.1f}"
                                                  for m in POSTPROCESS_MODES) + " |")
    mean = {m: (np.mean([s[m][0] for _, s in rows]), np.std([s[m][0] for _, s in rows]),
                np.mean([s[m][1] for _, s in rows])) for m in POSTPROCESS_MODES}
    lines.append("| **mean ± sd** | " + " | ".join(
        f"**{mean[m][0]:.2f} ± {mean[m][1]:.1f}** / {mean[m][2]:.1f}" for m in POSTPROCESS_MODES)
        + " |")
    for m in POSTPROCESS_MODES[1:]:
        diff = [s[m][0] - s["none"][0] for _, s in rows]
        lines.append(f"- {m} − none, per scan: min {min(diff):+.2f}, median "
                     f"{float(np.median(diff)):+.2f}, max {max(diff):+.2f}; better on "
                     f"{sum(d > 0 for d in diff)}, worse on {sum(d < 0 for d in diff)} of "
                     f"{len(diff)}")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

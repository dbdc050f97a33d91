"""Predict-time settings of a model's card chosen on out-of-fold patients.

Each ``--fold MODEL=P1,P2,...`` names a model and the patients it never trained on. Each
``--arm NAME=JSON`` is a set of card settings merged into the model's metadata (dicts merged
key by key, e.g. ``'air darkest={"normalization": {"outside": "darkest"}}'`` or
``'scales={"test_time_scales": [1, 0.75]}'``); every patient is
predicted once per arm by Predict itself and scored by the card's 3-D Dice per scan after the
clean-up. The first arm is the base every other is compared with; ``base={}`` is the model as
it is. Besides the fold table it reports each arm's worst change on one patient.

    OMP_NUM_THREADS=1 PYTHONPATH=benchmarks:. .venv/bin/python benchmarks/folds_meta_choice.py \\
        --data ../shared/data/lgg_brain_mri_2d --fold runs/f0.pt=P1,P2 \\
        --arm 'base={}' --arm 'air darkest={"normalization": {"outside": "darkest"}}' \\
        --clean-up small_pieces --out runs/folds_meta.md
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from held_out import add_fold_arguments, fold_report, fold_scans, write_report


def parse_arm(text: str) -> tuple[str, dict]:
    """``'NAME={"key": ...}'`` -> (NAME, settings)."""
    name, sep, settings = text.partition("=")
    try:
        value = json.loads(settings) if sep else None
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"arm {name!r}: its settings are not JSON ({e})"
                                         ) from None
    if not name.strip() or not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"an arm is NAME=JSON object, not {text!r}")
    return name.strip(), value


def merged(meta: dict, settings: dict) -> dict:
    """``meta`` with ``settings`` laid over it, nested dicts merged key by key."""
    out = dict(meta)
    for k, v in settings.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fold_arguments(p)
    p.add_argument("--arm", type=parse_arm, action="append", required=True,
                   metavar="NAME=JSON", help="card settings of one arm; the first is the base")
    p.add_argument("--clean-up", default="model", metavar="MODE",
                   help="the clean-up after Predict: the model's own (default) or one of none, "
                        "foreground, per_class, small_pieces")
    a = p.parse_args(argv)
    if len(a.arm) < 2:
        p.error("name at least two arms: the base and a candidate")

    from training.engine.inference import predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95
    from training.engine.postprocess import POSTPROCESS_MODES

    if a.clean_up not in ("model", *POSTPROCESS_MODES):
        p.error(f"--clean-up must be model or one of {', '.join(POSTPROCESS_MODES)}")
    rows, t0 = [], time.time()
    for k, model, meta, scans in fold_scans(p, a):
        n = int(meta["num_classes"])
        for name, im, lab, sp, _ in scans:
            row = []
            for _, settings in a.arm:
                m = merged(meta, settings)
                if a.clean_up != "model":
                    m["postprocess"] = a.clean_up
                out = predict_volume(model, m, im, device="cpu", probabilities=False)["labels"]
                r = dice_hd95(out, lab, classes_to_score([(out, lab)], n), sp)
                row.append(100 * float(np.mean(r["dice"])))
            rows.append((k, name, row))
            print(k, name, [round(v, 1) for v in row], flush=True)
    s = np.array([r[2] for r in rows])
    worst = [f"- {arm[0]}: its worst change on one patient {(s[:, j] - s[:, 0]).min():+.2f}"
             for j, arm in enumerate(a.arm) if j]
    lines = [*fold_report("Card settings at Predict, chosen on out-of-fold patients",
                          "folds_meta_choice.py", argv, len(a.fold), rows,
                          [arm[0] for arm in a.arm], "3-D Dice per scan, mean over classes, "
                          f"after the clean-up ({a.clean_up})", t0), "", *worst]
    return write_report(a.out, lines)


if __name__ == "__main__":
    raise SystemExit(main())

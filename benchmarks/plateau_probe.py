"""Which choice keeps the 3-patient labelled-only run on the background-only plateau?

The probe behind the second table of benchmarks/results/acdc_lr_plateau.md: the methods
table's network and data (ACDC labelled set 0, seed 0) on the 1500-step schedule, stopped after
STEPS, logging the training loss every 25 steps. From the project root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plateau_probe.py VARIANT 500 [OUT_DIR]

VARIANT: base, batch (batch norm), nodrop, sgd (SGD 0.01, the SSL4MIS optimiser), dicebg (Dice
over background too), noclip, fg05 (two thirds of patches on a structure), lr3e-3, biasinit
(the output bias at the log class priors 0.94 / 0.02 / 0.02 / 0.02; `--prior-init 1` now does
this with the labelled voxels' own shares). Writes OUT_DIR/VARIANT.{pt,json}.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from monai.losses import DiceLoss

sys.path.insert(0, ".")
import training.engine.losses as losses  # noqa: E402
import training.engine.networks as networks  # noqa: E402
from training.engine.data import load_train_data  # noqa: E402
from training.fit.trainer import TrainConfig, train  # noqa: E402


def _prior_bias_unet() -> None:
    """Every UNet built from here on starts with the fixed log-prior output bias."""
    original = networks.UNet.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        r2 = self.unshuffle**2
        priors = [0.94] + [0.06 / (self.num_classes - 1)] * (self.num_classes - 1)
        with torch.no_grad():
            for c, p in enumerate(priors):
                self.seg.bias[c * r2:(c + 1) * r2] = math.log(p)

    networks.UNet.__init__ = init


def main() -> None:
    torch.set_num_threads(1)
    variant = sys.argv[1]
    stop_at = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    out_dir = Path(sys.argv[3] if len(sys.argv) > 3 else "/work/diag")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_train_data("../shared/data/acdc", "3")
    kw = dict(method="supervised", steps=1500, size=[160, 160], unshuffle=2, base=12, depth=4,
              dropout=0.1, labeled_bs=8, unlabeled_bs=0, seed=0, log_every=25,
              checkpoint=str(out_dir / f"{variant}.pt"))
    changes = {"batch": {"norm": "batch"}, "nodrop": {"dropout": 0.0},
               "sgd": {"optimizer": "sgd", "lr": 0.01}, "noclip": {"clip_grad": 0.0},
               "fg05": {"foreground_share": 0.67}, "lr3e-3": {"lr": 3e-3}}
    kw.update(changes.get(variant, {}))
    if variant == "dicebg":
        losses._dice = DiceLoss(include_background=True, softmax=False, batch=True)
    elif variant == "biasinit":
        _prior_bias_unet()
    curve: list[tuple[int, float]] = []
    t0 = time.time()

    def on_event(e: dict) -> None:
        if e["type"] == "progress":
            curve.append((e["step"], round(e["losses"]["loss"], 3)))
            print(variant, e["step"], {k: round(v, 3) for k, v in e["losses"].items()},
                  f"{time.time() - t0:.0f}s", flush=True)

    train(TrainConfig(**kw), data, on_event=on_event,
          should_stop=lambda: bool(curve) and curve[-1][0] >= stop_at)
    (out_dir / f"{variant}.json").write_text(json.dumps(curve), encoding="utf-8")


if __name__ == "__main__":
    main()

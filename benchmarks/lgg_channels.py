"""Which image channels an LGG model should read: A/B on val patients, same recipe and seed.

The LGG slices are RGB: pre-contrast, FLAIR and post-contrast MRI. The shipped model reads the
FLAIR channel only. This trains one model per input on the train patients of
``benchmarks/splits/lgg.json`` and scores each on its val patients (3-D Dice per patient):

- ``flair``: the FLAIR channel (what ships);
- ``rgb``: all three sequences;
- ``flair-2.5d``: FLAIR of the slice and its two neighbours (context across slices);
- ``rgb-missing``: all three, with a share (``--missing-channels``) of training patches whose
  channels are all FLAIR, as in the patients whose missing sequences were filled with it.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/lgg_channels.py --steps 2000 \
        --inputs flair rgb flair-2.5d --out benchmarks/results/lgg_channels_val.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

INPUTS = ("flair", "rgb", "flair-2.5d", "rgb-missing")


def patient_scans(data_dir: str, patients: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each patient's RGB stack (z, y, x, 3) and labels (z, y, x), slices in file order."""
    from training.core.io import read_labels, read_volume
    from training.engine.data import scan_dataset

    wanted = set(patients)
    groups: dict[str, list] = {}
    for c in scan_dataset(data_dir):
        if c.patient in wanted:
            groups.setdefault(c.patient, []).append(c)
    out = {}
    for name in patients:
        imgs = [read_volume(c.image).data for c in groups[name]]
        labs = [read_labels(c.label)[0] for c in groups[name]]
        out[name] = (np.stack(imgs).astype(np.float32), np.concatenate(labs))
    return out


def as_input(rgb: np.ndarray, kind: str) -> np.ndarray:
    """The array a model of input ``kind`` reads, from a (z, y, x, 3) RGB stack."""
    from training.core.io import RGB_CHANNEL

    if kind in ("rgb", "rgb-missing"):
        return rgb
    flair = rgb[..., RGB_CHANNEL]
    if kind == "flair":
        return flair
    if kind == "flair-2.5d":  # neighbours by edge replication at the stack's ends
        up = np.concatenate([flair[:1], flair[:-1]])
        down = np.concatenate([flair[1:], flair[-1:]])
        return np.stack([up, flair, down], -1)
    raise ValueError(f"unknown input {kind!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/lgg_brain_mri_2d")
    p.add_argument("--split-file", default="benchmarks/splits/lgg.json")
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--missing-channels", type=float, default=0.2,
                   help="rgb-missing: share of patches with every channel FLAIR")
    p.add_argument("--runs", default="runs/lgg_channels", help="folder for the checkpoints")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    from training.engine.checkpoint import load_checkpoint
    from training.engine.data import TrainData
    from training.engine.inference import predict_volume
    from training.engine.metrics import dice_hd95
    from training.fit.trainer import TrainConfig, train

    split = json.loads(Path(a.split_file).read_text())
    train_scans = patient_scans(a.data, split["train"])
    val_scans = patient_scans(a.data, split["val"])
    Path(a.runs).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[float]] = {}
    took: dict[str, float] = {}
    for kind in a.inputs:
        tag = f"{kind}{a.missing_channels:g}" if kind == "rgb-missing" else kind
        ckpt = Path(a.runs) / f"{tag}_s{a.seed}_{a.steps}.pt"
        t0 = time.perf_counter()
        if not ckpt.exists():  # a finished arm is kept: a rerun scores it again
            data = TrainData.from_arrays(
                [as_input(im, kind) for im, _ in train_scans.values()],
                [lab for _, lab in train_scans.values()], num_classes=2,
                class_names=["background", "FLAIR abnormality"], names=list(train_scans))
            # the shipped LGG model's recipe (docs/models.md), fewer steps
            cfg = TrainConfig(method="supervised", dims=2, steps=a.steps, size=[256, 256],
                              unshuffle=2, base=12, depth=4, dropout=0.1, labeled_bs=4,
                              unlabeled_bs=0, seed=a.seed, device="cpu", checkpoint=str(ckpt),
                              checkpoint_every=500, log_every=100,
                              missing_channels=a.missing_channels if kind == "rgb-missing"
                              else None)
            train(cfg, data, on_event=lambda e, k=kind: print(k, e, flush=True)
                  if e.get("type") != "progress" or e.get("step", 0) % 250 == 0 else None)
            took[kind] = time.perf_counter() - t0
        model, meta = load_checkpoint(str(ckpt), device="cpu")
        rows[kind] = [100 * dice_hd95(predict_volume(model, meta, as_input(im, kind))["labels"],
                                      lab, 2)["dice"][0] for im, lab in val_scans.values()]
        print(kind, [f"{v:.1f}" for v in rows[kind]], flush=True)

    kinds = list(rows)
    lines = [
        "# LGG: which channels the model reads (val patients)", "",
        f"- command: `{shlex.join(['python', 'benchmarks/lgg_channels.py', *sys.argv[1:]])}`",
        f"- trained on the {len(train_scans)} train patients of {a.split_file}, scored on its "
        f"{len(val_scans)} val patients; the shipped LGG recipe (256-px patches, unshuffle 2, "
        f"base 12, depth 4, dropout 0.1, batch 4), {a.steps} steps, seed {a.seed}",
        "- Dice: 3-D per patient (FLAIR abnormality), no clean-up",
        "- seconds to train: " + (", ".join(f"{k} {took[k]:.0f}" for k in took)
                                  or "(every arm cached from an earlier run)"), "",
        "| patient | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds),
    ]
    for i, name in enumerate(val_scans):
        lines.append(f"| {name} | " + " | ".join(f"{rows[k][i]:.1f}" for k in kinds) + " |")
    lines.append("| **mean ± sd** | " + " | ".join(
        f"**{np.mean(rows[k]):.1f} ± {np.std(rows[k]):.1f}**" for k in kinds) + " |")
    for k in kinds[1:]:
        d = np.array(rows[k]) - np.array(rows[kinds[0]])
        lines.append(f"- {k} − {kinds[0]}: mean {d.mean():+.1f}, better on "
                     f"{int((d > 0).sum())} of {len(d)}")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How to blend a model's probabilities with the fill between painted slices (no Retrain).

K evenly spaced slices of each scan are painted (its first and last included); the model as
given predicts the rest. Arms: the network alone, the fill alone, a constant network share w
wherever the fill covers, and a share that grows with the distance from the nearest painted
slice (``gap F``: F times t, t = 0 at a painted slice, 1 midway between two; ``gapsq F``: F
times sqrt(t)). Dice is on the whole scan with the painted slices as painted.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/blend_by_gap.py \
        --data ../shared/data/left_atrium_2018 --split train --offset 4 --cases 16 \
        --model benchmarks/results/la_3d_methods_recipe.runs/labelled-only_seed0.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from training.interactive.interpolation import gap_position

ARMS = ["net", "w0.3", "w0.5", "w0.7", "fill", "gap0.5", "gap0.7", "gap1.0", "gapsq0.7",
        "gapsq1.0"]


def network_share(arm: str, t: np.ndarray) -> np.ndarray:
    if arm == "net":
        return np.ones_like(t)
    if arm == "fill":
        return np.zeros_like(t)
    if arm.startswith("gapsq"):
        return float(arm[5:]) * np.sqrt(t)
    if arm.startswith("gap"):
        return float(arm[3:]) * t
    return np.full_like(t, float(arm[1:]))


def main() -> None:
    from training.bench.effort import load_cases
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.engine.metrics import mean_dice
    from training.interactive.interpolation import even_slices, interpolation_probabilities
    from training.interactive.loop import sparse_labels

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cases", type=int, required=True)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--split", default="")
    ap.add_argument("--patients", default="")
    ap.add_argument("--ks", default="3,5")
    a = ap.parse_args()
    torch.set_num_threads(1)
    net, meta = load_checkpoint(a.model, device="cpu")
    channels = int((meta.get("network") or {}).get("in_channels", 1))
    cases, _ = load_cases(a.data, a.cases, a.split or None, a.offset,
                          keep_channels=channels > 1,
                          patients=a.patients.split(",") if a.patients else None)
    rows: dict[int, list[dict]] = {}
    for name, image, truth in cases:
        probs = predict_volume(net, meta, image, device="cpu")["probabilities"]
        for k in map(int, a.ks.split(",")):
            painted = even_slices(truth, k)
            prior, covered = interpolation_probabilities(sparse_labels(truth, painted),
                                                         probs.shape[0])
            t = gap_position(len(truth), painted)
            out = {}
            for arm in ARMS:
                w = np.where(covered, network_share(arm, t), 1.0)[None, :, None, None]
                lab = (w * probs + (1 - w) * prior).argmax(0).astype(np.uint8)
                lab[painted] = truth[painted]
                out[arm] = 100 * mean_dice(lab, truth)
            rows.setdefault(k, []).append(out)
            print(name, k, " ".join(f"{arm}={v:.1f}" for arm, v in out.items()), flush=True)
    for k, rs in rows.items():
        print(f"K={k} mean over {len(rs)}:",
              " ".join(f"{arm}={np.mean([r[arm] for r in rs]):.1f}" for arm in ARMS))


if __name__ == "__main__":
    main()

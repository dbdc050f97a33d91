"""A taught model corrected by its errors on the painted slices, against the dock's blend.

Exploration, no Retrain: K evenly spaced slices of each scan are painted (its first and last
included) and a model that learnt the structure elsewhere predicts the rest. Arms, scored on
the unpainted slices between the ends (mean Dice over structures):

- ``net``: the network alone; ``fill``: shape interpolation between the painted slices;
- ``blend``: the dock's blend function, the network's probabilities weighing 0.3 against the
  soft interpolation (:func:`training.interactive.interpolation.fuse_with_interpolation`); the
  dock fills the gaps by registration instead and keeps the main 3-D piece, which this probe
  leaves out for every arm alike;
- ``resid C``: the network's signed distance per slice plus its error on the two neighbouring
  painted slices (truth's signed distance minus the network's, clipped to +-C pixels; "inf" no
  clip) interpolated between them: where the network is right nothing moves, where it is off
  by a margin on a painted slice that margin carries to its neighbours.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/residual_probe.py \
        --data ../shared/data/left_atrium_2018 --split train --offset 10 --cases 10 \
        --model runs/resid/la10.pt --out benchmarks/results/residual_probe_la.md
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CAPS = (None, 3.0, 6.0, 12.0)


def _sd(mask: np.ndarray, far: float) -> np.ndarray:
    from training.interactive.interpolation import signed_distance

    return np.clip(signed_distance(mask), -far, far)  # empty or full: as far as the slice goes


def corrected(net: np.ndarray, known: np.ndarray, painted: list[int], classes: list[int],
              cap: float | None) -> np.ndarray:
    """``net`` labels (z, y, x) with each painted slice's signed-distance error interpolated
    between painted slices along z; painted slices as painted."""
    from training.interactive.interpolation import labels_from_distances

    out = net.copy()
    far = float(np.hypot(*net.shape[1:]))
    lim = far if cap is None else cap
    for a, b in zip(painted[:-1], painted[1:], strict=False):
        err = {z: {c: np.clip(_sd(known[z] == c, far) - _sd(net[z] == c, far), -lim, lim)
                   for c in classes} for z in (a, b)}
        for z in range(a + 1, b):
            t = (z - a) / (b - a)
            dist = {c: _sd(net[z] == c, far) + (1 - t) * err[a][c] + t * err[b][c]
                    for c in classes}
            out[z] = labels_from_distances(dist, net.shape[1:])
    for z in painted:
        out[z] = known[z]
    return out


def _dice(pred: np.ndarray, truth: np.ndarray, classes: list[int], zs: list[int]) -> float:
    out = []
    for c in classes:
        a, b = pred[zs] == c, truth[zs] == c
        s = int(a.sum() + b.sum())
        out.append(2 * int((a & b).sum()) / s if s else np.nan)
    return 100 * float(np.nanmean(out))


def main() -> None:
    from training.bench.effort import load_cases
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.interactive.interpolation import (
        even_slices,
        fuse_with_interpolation,
        interpolate_between_slices,
    )
    from training.interactive.loop import sparse_labels

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.time()
    cases, names = load_cases(args.data, args.cases, args.split or None, offset=args.offset)
    net_m, meta = load_checkpoint(args.model)
    classes = list(range(1, len(names)))
    arms = ["net", "fill", "blend"] + [f"resid {'inf' if c is None else f'{c:g}'}"
                                       for c in CAPS]
    rows: dict[int, list[dict]] = {k: [] for k in args.ks}
    for key, image, truth in cases:
        res = predict_volume(net_m, meta, image, probabilities=True)
        for k in args.ks:
            painted = [int(z) for z in even_slices(truth, k)]
            zs = [z for z in range(painted[0] + 1, painted[-1]) if z not in painted]
            if not zs:
                continue
            sparse = sparse_labels(truth, painted, 0)
            known = np.where(sparse == 255, 0, sparse).astype(np.uint8)
            shown = {"net": res["labels"], "fill": interpolate_between_slices(sparse, painted),
                     "blend": fuse_with_interpolation(res["probabilities"], sparse, weight=0.3)}
            for cap, arm in zip(CAPS, arms[3:], strict=True):
                shown[arm] = corrected(res["labels"], known, painted, classes, cap)
            row = {"scan": key} | {a: _dice(shown[a], truth, classes, zs) for a in arms}
            rows[k].append(row)
            print(k, " ".join(f"{a} {row[a]:.1f}" if a != "scan" else row[a]
                              for a in row), flush=True)
    lines = [f"# {__doc__.splitlines()[0]}", "",
             f"- command: `benchmarks/residual_probe.py --data {args.data} --split "
             f"'{args.split}' --offset {args.offset} --cases {args.cases} --model {args.model} "
             f"--ks {' '.join(map(str, args.ks))}`; {time.time() - t0:.0f} s",
             "- Dice on the unpainted slices between the ends, mean over scans "
             "(± sd over scans); arms in the script's docstring", "",
             "| K | scans | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for k, rs in rows.items():
        if rs:
            cells = [f"{np.mean([r[a] for r in rs]):.1f} ± {np.std([r[a] for r in rs]):.1f}"
                     for a in arms]
            lines.append(f"| {k} | {len(rs)} | " + " | ".join(cells) + " |")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Time to make one training batch: the earlier per-slice sampler against the recipe's batched
one, side by side, on ACDC (issue 23, item 3).

    PYTHONPATH=. python benchmarks/sampler_speed.py --rounds 7 \\
        --out benchmarks/results/sampler_speed.md

Both samplers draw labelled + unlabelled batches from the same data at the same patch size;
rounds alternate between them so that a noisy shared machine slows both alike. A GPU step of a
1.9 M-parameter U-Net took 0.054 s last time: a sampler that needs a good part of that keeps the
GPU waiting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import median

import torch

from training.bench.benchmark import machine_description
from training.engine.augment import Augmentation
from training.engine.data import ResizedSliceSampler, load_train_data
from training.engine.patches import SliceSampler


def _per_batch(sampler, n: int) -> float:
    sampler.next()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        sampler.next()
    return (time.perf_counter() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/acdc")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 24])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=10, help="batches per round")
    ap.add_argument("--out", default="benchmarks/results/sampler_speed.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_train_data(args.data, "3")
    rows = []
    for size in args.sizes:
        for bs in args.batches:
            old = ResizedSliceSampler(data, (size, size), bs, bs, seed=0, rotate=20)
            new = SliceSampler(data, (size, size), bs, bs, seed=0,
                               augmentation=Augmentation.named("anatomy"))
            t_old, t_new = [], []
            for _ in range(args.rounds):
                t_old.append(_per_batch(old, args.n))
                t_new.append(_per_batch(new, args.n))
            rows.append((size, bs, median(t_old), median(t_new)))
            print(rows[-1], flush=True)
    lines = ["# Making one training batch: per-slice sampler against the batched one", "",
             f"- command: `PYTHONPATH=. python benchmarks/sampler_speed.py --sizes "
             f"{' '.join(map(str, args.sizes))} --batches {' '.join(map(str, args.batches))} "
             f"--rounds {args.rounds} --n {args.n} --out {args.out}`",
             f"- machine: {machine_description()}; one torch thread",
             "- data: ACDC, 3 labelled patients + the other train volumes unlabelled; each "
             "batch is B labelled + B unlabelled slices",
             "- earlier: whole slices resized to the size, per-slice 90-degree turn, flip and "
             "(half of them) a +-20 degree turn in a Python loop; recipe: native-grid patches "
             "with turn, scale, gamma, contrast, brightness and noise, in one batched call",
             f"- median over {args.rounds} alternating rounds of {args.n} batches each", "",
             "| size | B | earlier, ms/batch | recipe, ms/batch | earlier / recipe |",
             "|---|---|---|---|---|"]
    lines += [f"| {s} | {b} | {1000 * o:.1f} | {1000 * n:.1f} | {o / n:.2f}x |"
              for s, b, o, n in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

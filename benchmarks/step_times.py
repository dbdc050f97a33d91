"""Measure the per-step training time of every method on ACDC (3 labelled patients, 2D).

Usage: PYTHONPATH=. python benchmarks/step_times.py --steps 20 --size 128 128 \
    --out benchmarks/results/step_times.md

With ``--precisions fp32 bf16`` each method is timed in both, in alternating rounds (fp32,
bf16, fp32, bf16, ...) so that a noisy shared machine slows both alike; the table gives the
median over rounds of each round's mean step time, and their ratio.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.engine.data import load_train_data
from training.engine.networks import count_parameters
from training.fit.trainer import TrainConfig, train
from training.methods import METHODS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/acdc")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, nargs=2, default=[128, 128])
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--out", default="benchmarks/results/step_times.md")
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if len(args.precisions) > 1:
        return compare_precisions(args)
    data = load_train_data(args.data, "3")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            per_step, path = _time_steps(name, data, args, args.precisions[0], tmp)
            from training.engine.checkpoint import load_checkpoint

            model, _ = load_checkpoint(path)
            rows.append((name, per_step, count_parameters(model)))
            print(f"{name}: {per_step:.3f} s/step", file=sys.stderr, flush=True)
    lines = [
        "# Per-step training time per method",
        "",
        f"- command: `PYTHONPATH=. python benchmarks/step_times.py --steps {args.steps} "
        f"--size {args.size[0]} {args.size[1]} --base {args.base} --depth {args.depth} "
        f"--bs {args.bs}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads (2 CPU cores),"
        f" torch {torch.__version__}, CPU only",
        f"- data: ACDC, 3 labelled patients (6 volumes) + 56 unlabelled train volumes, 2D "
        f"{args.size[0]}x{args.size[1]}, batch {args.bs} labelled + {args.bs} unlabelled, "
        "no warm-up (semi-supervised branch from step 0)",
        f"- mean over steps 4..{args.steps} (first 3 skipped)",
        "",
        "| method | s/step | parameters of the output model |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {t:.3f} | {p:,} |" for n, t, p in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def _time_steps(name: str, data, args, precision: str, tmp: str) -> tuple[float, str]:
    """Mean seconds per step of one short run (the first 3 steps warm the allocator), and its
    checkpoint."""
    times: list[float] = []
    cfg = TrainConfig(method=name, steps=args.steps, size=list(args.size), base=args.base,
                      depth=args.depth, labeled_bs=args.bs, unlabeled_bs=args.bs,
                      warmup_fraction=0.0, log_every=1, device="cpu", precision=precision,
                      checkpoint=str(Path(tmp) / f"{name}_{precision}.pt"))
    path = train(cfg, data, on_event=lambda e: e["type"] == "progress"
                 and times.append(time.perf_counter()))
    return (times[-1] - times[2]) / (len(times) - 3), str(path)


def compare_precisions(args) -> int:
    from statistics import median

    from training.bench.benchmark import machine_description
    from training.core.cpu_math import cpu_has_fast_bf16

    data = load_train_data(args.data, "3")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            per = {p: [] for p in args.precisions}
            for _ in range(args.rounds):
                for p in args.precisions:
                    per[p].append(_time_steps(name, data, args, p, tmp)[0])
            med = {p: median(v) for p, v in per.items()}
            rows.append((name, med))
            print(name, {p: round(v, 3) for p, v in med.items()}, file=sys.stderr, flush=True)
    a, b = args.precisions[:2]
    lines = [
        f"# Per-step training time, {a} against {b}, on the CPU",
        "",
        f"- command: `PYTHONPATH=. python benchmarks/step_times.py --steps {args.steps} "
        f"--size {args.size[0]} {args.size[1]} --base {args.base} --depth {args.depth} "
        f"--bs {args.bs} --methods {' '.join(args.methods)} --precisions "
        f"{' '.join(args.precisions)} --rounds {args.rounds} --out {args.out}`",
        f"- machine: {machine_description()}; bf16 in hardware: {cpu_has_fast_bf16()}",
        f"- data: ACDC, 3 labelled patients + 56 unlabelled train volumes, 2D {args.size[0]}"
        f"x{args.size[1]}, batch {args.bs} + {args.bs}, no warm-up",
        f"- median over {args.rounds} alternating rounds of each round's mean s/step (steps "
        f"4..{args.steps})",
        "",
        f"| method | {a} s/step | {b} s/step | {a} / {b} |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {m[a]:.3f} | {m[b]:.3f} | {m[a] / m[b]:.2f}x |" for n, m in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

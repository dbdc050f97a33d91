"""Measure the per-step training time of every method on ACDC (3 labelled patients, 2D).

Usage: PYTHONPATH=. python benchmarks/step_times.py --steps 20 --size 128 128 \
    --out benchmarks/results/step_times.md

With ``--precisions fp32 bf16`` each method is timed in both, in alternating rounds (fp32,
bf16, fp32, bf16, ...) so that a noisy shared machine slows both alike; the table gives the
median over rounds of each round's mean step time, and their ratio.

With ``--samplings resize patch`` the earlier pipeline (whole slices squashed to the size,
per-slice turns and flips in a Python loop, batches made on the CPU) is timed against the
recipe's (native-grid patches augmented in one batched call on the training device), in
alternating rounds, for each precision, on ``--device`` (issue 23, item 3). On a GPU machine,
which has no ``../shared``, ``--pack`` reads the volumes from ``gpu_paper_budget.py pack``:

    python benchmarks/step_times.py --pack .gpu/acdc_train.npz --device cuda \
        --samplings resize patch --precisions fp32 bf16 --methods supervised bcp \
        --size 256 256 --base 16 --depth 4 --bs 12 --rounds 3 --steps 30 --out $OUT/steps.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_paper_budget import _engine_imports  # noqa: E402

_engine_imports()  # a GPU machine may lack SimpleITK; with --pack no image file is read there

from training.engine.data import load_train_data  # noqa: E402
from training.engine.networks import count_parameters  # noqa: E402
from training.fit.trainer import TrainConfig, train  # noqa: E402
from training.methods import METHODS  # noqa: E402


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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pack", default=None, help="volumes from gpu_paper_budget.py pack")
    ap.add_argument("--samplings", nargs="+", default=["patch"], choices=["resize", "patch"])
    ap.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                    help="train compiled (semiseg train --compile); the first 3 steps, where "
                    "it compiles, are not timed")
    ap.add_argument("--reference-s", type=float, default=0.054,
                    help="the step time to compare with (0.054 s: bcp, 256 px, batch 12 + 12, "
                    "the earlier pipeline on one H200)")
    args = ap.parse_args()
    if len(args.samplings) > 1:
        return compare_pipelines(args)
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


def _time_steps(name: str, data, args, precision: str, tmp: str,
                sampling: str = "patch", same_images: bool = False) -> tuple[float, str]:
    """Mean seconds per step of one short run (the first 3 steps warm the allocator), and its
    checkpoint."""
    times: list[float] = []
    cfg = TrainConfig(method=name, steps=args.steps, size=list(args.size), base=args.base,
                      depth=args.depth, labeled_bs=args.bs, unlabeled_bs=args.bs,
                      warmup_fraction=0.0, log_every=1, device=getattr(args, "device", "cpu"),
                      precision=precision, sampling=sampling, deterministic=False,
                      compile=getattr(args, "compile", None),
                      checkpoint=str(Path(tmp) / f"{name}_{precision}.pt"))
    if same_images and name == "supervised":  # as many images per step as the others
        cfg = replace(cfg, labeled_bs=2 * args.bs, unlabeled_bs=0)
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


def _pack_data(path: str):
    """3 labelled ACDC patients (labelled set 0) + the other train volumes unlabelled, from a
    ``gpu_paper_budget.py pack`` file."""
    from gpu_paper_budget import _load_pack, _train_data

    info, vols = _load_pack(path)
    return _train_data("bcp", info, vols, 0)


def compare_pipelines(args) -> int:
    """The earlier pipeline against the recipe's, same network and batch, alternating rounds."""
    from statistics import median

    from training.bench.benchmark import machine_description

    data = _pack_data(args.pack) if args.pack else load_train_data(args.data, "3")
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    per: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in args.methods:
                for p in args.precisions:
                    for sampling in args.samplings:
                        t = _time_steps(name, data, args, p, tmp, sampling, True)[0]
                        per.setdefault((name, p, sampling), []).append(t)
                        print(f"round {r} {name} {p} {sampling}: {t:.4f} s/step",
                              file=sys.stderr, flush=True)
    old, new = args.samplings[0], args.samplings[-1]
    net = f"2-D U-Net base {args.base}, depth {args.depth}"
    lines = [
        f"# Training step time: the earlier pipeline ({old}) against the recipe's ({new})",
        "",
        f"- command: `python benchmarks/step_times.py {' '.join(sys.argv[1:])}`",
        f"- machine: {machine_description()}; trained on {where}",
        f"- network: {net}; {args.size[0]}x{args.size[1]} px; supervised: batch "
        f"{2 * args.bs} labelled; semi-supervised methods: {args.bs} labelled + {args.bs} "
        "unlabelled, no warm-up (their costlier steps)",
        "- data: ACDC train split, 3 labelled patients (set 0) + the other train volumes",
        f"- median over {args.rounds} alternating rounds of each round's mean s/step (steps "
        f"4..{args.steps}); reference: {args.reference_s} s/step (bcp on one H200 with the "
        "earlier pipeline, benchmarks/results/acdc_paper_budget_gpu.md)",
        "",
        f"| method | precision | {old} s/step | {new} s/step | {old} / {new} | "
        f"reference / {new} |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.methods:
        for p in args.precisions:
            a, b = median(per[(name, p, old)]), median(per[(name, p, new)])
            lines.append(f"| {name} | {p} | {a:.4f} | {b:.4f} | {a / b:.2f}x | "
                         f"{args.reference_s / b:.1f}x |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

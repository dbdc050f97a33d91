"""A/B of training-recipe choices on a val split (issue 23): each arm is a set of TrainConfig
settings, trained on the train split (all labelled, or the first N patients) for the same
steps and seeds, scored by 3-D Dice per scan on val only (test is never looked at here).

    python benchmarks/recipe_ablation.py --data ../shared/data/acdc --steps 1000 --seeds 2 \\
        --arms old new new_unshuffle2 --out benchmarks/results/recipe_ablation.md

Runs are cached as JSON beside the table (``<out>.runs/``), so a stopped ablation resumes and
arms can be added later; ``--jobs`` runs that many trainings at once, one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# Each arm: TrainConfig fields on top of BASE. "old" is the recipe before issue 23.
BASE = {"method": "supervised", "dims": 2, "base": 12, "depth": 4, "dropout": 0.1,
        "labeled_bs": 8, "unlabeled_bs": 0, "log_every": 50}
ARMS: dict[str, dict] = {
    "old": {"sampling": "resize", "size": [128, 128], "optimizer": "adam", "lr": 1e-2,
            "lr_warmup": 0.0, "clip_grad": 0.0, "weights_ema": 0.0},
    "old_lr1e-3": {"sampling": "resize", "size": [128, 128], "optimizer": "adam", "lr": 1e-3,
                   "lr_warmup": 0.0, "clip_grad": 0.0, "weights_ema": 0.0},
    "new": {},
    "new_unshuffle2": {"unshuffle": 2},
    "new_unshuffle2_base16": {"unshuffle": 2, "base": 16},
    "new_unshuffle2_lr3e-3": {"unshuffle": 2, "lr": 3e-3},
    "new_unshuffle2_no_ema": {"unshuffle": 2, "weights_ema": 0.0},
    "new_unshuffle2_no_aug": {"unshuffle": 2, "augment": "none"},
    "new_no_ema": {"weights_ema": 0.0},
    "new_no_aug": {"augment": "none"},
    "new_flips": {"augment": "any-orientation"},
    "new_patch128": {"size": [128, 128]},
    "new_patch192_unshuffle2": {"size": [192, 192], "unshuffle": 2},
    "new_fg0": {"foreground_share": 0.0},
}


def run_arm(arm: str, seed: int, data_dir: str, labeled: str | None, steps: int,
            workdir: str, size: list[int] | None) -> dict:
    """Train one arm with one seed and score it on val (cached)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from training.bench.benchmark import evaluate_split
    from training.engine.data import load_train_data, scan_dataset
    from training.fit.trainer import TrainConfig, train

    cache = Path(workdir) / f"{arm}_seed{seed}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    if labeled is None:
        pool = [c for c in scan_dataset(data_dir) if c.split in (None, "train")]
        labeled = ",".join(c.name for c in pool)
    data = load_train_data(data_dir, labeled, use_unlabeled=False)
    settings = {**BASE, **ARMS[arm]}
    if size and "size" not in ARMS[arm]:
        settings["size"] = size
    cfg = replace(TrainConfig(), **settings, steps=steps, seed=seed,
                  checkpoint=str(Path(workdir) / f"{arm}_seed{seed}.pt"))
    t0 = time.perf_counter()
    path = train(cfg, data)
    seconds = time.perf_counter() - t0
    val = evaluate_split(str(path), data_dir, "val")
    result = {"arm": arm, "seed": seed, "steps": steps, "train_seconds": seconds,
              "settings": settings, "val": val}
    cache.write_text(json.dumps(result))
    print(f"{arm} seed {seed}: val mean {100 * np.mean(val['dice']):.1f} "
          f"({seconds:.0f} s)", flush=True)
    return result


def render(results: list[dict], class_names: list[str], command: str) -> str:
    arms: dict[str, list[dict]] = {}
    for r in results:
        arms.setdefault(r["arm"], []).append(r)
    lines = ["# Recipe ablation (val split only)", "", f"- command: `{command}`",
             "- 3-D Dice per val scan, mean over scans, then mean ± SD over seeds; the test "
             "split is not scored here.", "",
             "| arm | settings | seeds | " + " | ".join(class_names) + " | mean | s/step |",
             "|---|---|---|" + "---|" * (len(class_names) + 2)]
    for arm, rs in arms.items():
        per = np.array([[100 * d for d in r["val"]["dice"]] for r in rs])
        means = per.mean(1)
        cls = " | ".join(f"{per[:, k].mean():.1f}" for k in range(per.shape[1]))
        sps = np.mean([r["train_seconds"] / r["steps"] for r in rs])
        spread = f" ± {means.std():.1f}" if len(rs) > 1 else ""
        lines.append(f"| {arm} | {json.dumps(ARMS[arm]) or '{}'} | {len(rs)} | {cls} | "
                     f"**{means.mean():.1f}**{spread} | {sps:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--labeled", default=None, help="patients (default: the whole train split)")
    ap.add_argument("--arms", nargs="+", required=True, choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--size", type=int, nargs=2, default=None,
                    help="patch size for arms that do not set one")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    workdir = Path(args.out).with_suffix(".runs")
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [(a, s) for s in range(args.seeds) for a in args.arms]
    from concurrent.futures import ProcessPoolExecutor

    from training.engine.data import class_names_from_index

    names = (class_names_from_index(args.data) or ["background", "structure"])[1:]
    command = "python " + " ".join(["benchmarks/recipe_ablation.py", *(argv or sys.argv[1:])])
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_arm, a, s, args.data, args.labeled, args.steps,
                               str(workdir), args.size) for a, s in jobs]
        for f in futures:
            results.append(f.result())
            Path(args.out).write_text(render(results, names, command))
    print(render(results, names, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The simulated clinician: measure what K corrected slices and one retrain buy on a new volume.

Per test volume: predict; "correct" K slices chosen by a strategy (copy their ground truth, as a
perfect clinician would); retrain on those sparse labels with
:func:`training.interactive.retrain.retrain_once` (what the plugin's Retrain runs, with its
defaults);
report the Dice on the slices that were **not** corrected, before and after, and the wall time.
``semiseg simulate`` runs it from the shell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.engine.metrics import mean_dice
from training.interactive.loop import STRATEGIES, choose_slices, sparse_labels, split_held_back
from training.interactive.retrain import ANCHOR_CONFIDENCE, HELD_BACK_FRACTION, Shown, retrain_once

Row = dict[str, Any]


def uncorrected_dice(
    prediction: np.ndarray, truth: np.ndarray, corrected: Sequence[int], axis: int = 0,
) -> float:
    """Mean foreground Dice over the volume without its corrected slices."""
    keep = [i for i in range(truth.shape[axis]) if i not in set(corrected)]
    if not keep:
        return float("nan")
    return mean_dice(np.take(prediction, keep, axis=axis), np.take(truth, keep, axis=axis))


def synthetic_case(shape: Sequence[int] = (8, 32, 32), seed: int = 0, noise: float = 0.35
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc per slice in Gaussian noise, and its label (for tests and smoke runs)."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    image = rng.normal(0.0, noise, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(z):
        r = rng.uniform(0.12, 0.25) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[k][disc] += 1.0
        labels[k][disc] = 1
    return image, labels


def simulate_case(
    image: np.ndarray,
    truth: np.ndarray,
    model_path: str | Path,
    corrections: int = 3,
    strategy: str = "uncertainty",
    retrain_steps: int = 50,
    method: str = "supervised",
    seed: int = 0,
    axis: int = 0,
    device: str | None = None,
    mc_samples: int = 0,
    hold_back: bool = False,
    work_dir: str | Path | None = None,
    name: str = "",
    anchor: float | None = ANCHOR_CONFIDENCE,
    **config: Any,
) -> Row:
    """Play the clinician on one volume; returns one result row.

    With ``hold_back`` the plugin's rule is applied too: some corrected slices are kept out of
    training and the retrain is adopted only if it did not get worse on them (``adopted``,
    ``dice_kept`` = the Dice the user ends up with).
    """
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume

    t0 = time.perf_counter()
    model, meta = load_checkpoint(model_path, device=device)
    before = predict_volume(model, meta, image, mc_samples=mc_samples, device=device)
    t_predict = time.perf_counter() - t0
    chosen = choose_slices(strategy, corrections, truth.shape[axis], before["uncertainty"],
                           axis=axis, seed=seed)
    train_slices, held = (split_held_back(chosen, HELD_BACK_FRACTION, seed) if hold_back
                          else (chosen, []))
    dice_before = uncorrected_dice(before["labels"], truth, chosen, axis)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        result = retrain_once(model_path, image, sparse_labels(truth, train_slices, axis),
                              Path(tmp) / "model.pt", reference=sparse_labels(truth, held, axis),
                              held_back=[(axis, i) for i in held], method=method,
                              steps=retrain_steps, seed=seed,
                              shown=Shown(mc_samples=mc_samples, device=device), anchor=anchor,
                              **config)
    if result is None:
        raise RuntimeError("fine-tuning stopped before its first step")
    dice_after = uncorrected_dice(result.prediction, truth, chosen, axis)
    adopted = result.verdict.adopted
    return {
        "case": name, "strategy": strategy, "corrections": len(chosen), "method": method,
        "steps": retrain_steps, "slices": chosen, "held_back": held,
        "dice_before": dice_before, "dice_after": dice_after,
        "delta": dice_after - dice_before, "adopted": adopted, "reason": result.verdict.reason,
        "dice_kept": dice_after if adopted else dice_before,
        "retrain_s": result.train_s, "predict_s": result.predict_s,
        "wall_s": time.perf_counter() - t0,
        "first_predict_s": t_predict,
    }


def run_simulation(
    data_dir: str | Path,
    model_path: str | Path,
    corrections: int = 3,
    strategy: str = "uncertainty",
    retrain_steps: int = 50,
    method: str = "supervised",
    cases: int | Sequence[str] | None = None,
    seed: int = 0,
    split: str = "test",
    axis: int = 0,
    device: str | None = None,
    hold_back: bool = False,
    log: Callable[[str], None] | None = None,
    **config: Any,
) -> list[Row]:
    """Simulate the clinician on each test volume of a dataset folder; one row per volume.

    ``cases`` limits the run to the first N test cases or to named ones. The split is the
    folder's ``index.csv`` split column (all labelled cases when it has none).
    """
    from training.core.io import DataError, read_image, read_labels
    from training.engine.data import scan_dataset

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if corrections < 1:
        raise ValueError("--corrections must be at least 1")
    all_cases = [c for c in scan_dataset(data_dir) if c.label is not None]
    pool = [c for c in all_cases if c.split == split] or [c for c in all_cases if c.split is None]
    if isinstance(cases, int):
        pool = pool[:cases]
    elif cases:
        wanted = set(cases)
        pool = [c for c in all_cases if c.name in wanted or c.patient in wanted]
    if not pool:
        raise DataError(f"no labelled {split} cases in {data_dir}")
    rows = []
    for k, case in enumerate(pool):
        image, _ = read_image(case.image)
        truth, _ = read_labels(case.label)  # type: ignore[arg-type]
        row = simulate_case(image, truth.astype(np.uint8), model_path, corrections, strategy,
                            retrain_steps, method, seed=seed + k, axis=axis, device=device,
                            hold_back=hold_back, name=case.name, **config)
        rows.append(row)
        if log:
            log(f"{case.name}: Dice on uncorrected slices {row['dice_before']:.3f} -> "
                f"{row['dice_after']:.3f} ({row['wall_s']:.1f} s)")
    return rows


def summarize(rows: Sequence[Row]) -> Row:
    """Mean of the numeric columns over rows."""
    keys = ("dice_before", "dice_after", "delta", "dice_kept", "retrain_s", "wall_s")
    out: Row = {"case": "mean", "n": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None and np.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    out["adopted"] = sum(bool(r.get("adopted")) for r in rows)
    return out


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows plus their mean."""
    head = ("| case | method | K | strategy | slices | Dice before | Dice after | change | "
            "adopted | retrain s | wall s |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['method']} | {r['corrections']} | {r['strategy']} | "
            f"{' '.join(map(str, r['slices']))} | {r['dice_before']:.3f} | "
            f"{r['dice_after']:.3f} | {r['delta']:+.3f} | {'yes' if r['adopted'] else 'no'} | "
            f"{r['retrain_s']:.1f} | {r['wall_s']:.1f} |")
    if rows:
        m = summarize(rows)
        lines.append(
            f"| **mean** ({m['n']}) | | | | | {m['dice_before']:.3f} | {m['dice_after']:.3f} | "
            f"{m['delta']:+.3f} | {m['adopted']}/{m['n']} | {m['retrain_s']:.1f} | "
            f"{m['wall_s']:.1f} |")
    return "\n".join(lines)


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``simulate`` to a ``semiseg`` subparsers object; dispatch with :func:`run_from_args`."""
    from training.methods import METHODS

    p = subparsers.add_parser(
        "simulate", help="play the clinician: correct K slices, retrain, measure",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (images/, labels/, index.csv)")
    p.add_argument("--model", required=True, help="checkpoint to start from")
    p.add_argument("--corrections", type=int, default=3, help="K slices corrected per volume")
    p.add_argument("--strategy", choices=STRATEGIES, default="uncertainty")
    p.add_argument("--retrain-steps", type=int, default=50)
    p.add_argument("--method", choices=METHODS, default="supervised")
    p.add_argument("--cases", default=None, help="first N test cases, or case,case,...")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--axis", type=int, default=0, help="slice axis of the (z, y, x) volume")
    p.add_argument("--hold-back", action="store_true",
                   help="also apply the plugin's adopt/reject rule on held-back slices")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate")
    p.add_argument("--anchor", type=float, default=ANCHOR_CONFIDENCE, metavar="CONF",
                   help="keep the start model's voxels of confidence >= CONF as pseudo-labels "
                        "off the corrected slices (default: the plugin's, %(default)s)")
    p.add_argument("--no-anchor", dest="anchor", action="store_const", const=None,
                   help="fine-tune on the corrected slices alone")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the Markdown table to this file")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``semiseg simulate`` from parsed arguments; prints (and writes) the table."""
    from training.core.io import DataError
    from training.engine.checkpoint import CheckpointError

    cases: int | list[str] | None = None
    if args.cases:
        cases = int(args.cases) if str(args.cases).isdigit() else args.cases.split(",")
    extra: dict[str, Any] = {"lr": args.lr} if args.lr is not None else {}
    try:
        rows = run_simulation(
            args.data, args.model, args.corrections, args.strategy, args.retrain_steps,
            args.method, cases=cases, seed=args.seed, split=args.split, axis=args.axis,
            device=None if args.device == "auto" else args.device, hold_back=args.hold_back,
            anchor=args.anchor, log=lambda m: print(m, file=sys.stderr, flush=True), **extra,
        )
    except (DataError, CheckpointError, ValueError) as exc:
        print(f"semiseg simulate: error: {exc}", file=sys.stderr)
        return 2
    table = format_table(rows)
    print(table)
    if args.out:
        header = (f"`semiseg simulate --data {args.data} --model {args.model} --corrections "
                  f"{args.corrections} --strategy {args.strategy} --retrain-steps "
                  f"{args.retrain_steps} --method {args.method} --cases {args.cases}"
                  + (f" --anchor {args.anchor}" if args.anchor is not None else " --no-anchor")
                  + "`\n\n")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(header + table + "\n", encoding="utf-8")
    return 0

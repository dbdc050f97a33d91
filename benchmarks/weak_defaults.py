"""``semiseg train --method cam_weak --tags`` with its defaults, scored on patients it never saw
(issue 23: the weak path must reach >= 50 Dice on tumour slices with <= 30 % false-positive
slices, without collapsing).

The LGG train patients of ``benchmarks/splits/lgg.json`` are given to the command as a dataset
folder of their own (links to the shared files and an index.csv of their rows), so nothing of
the val and test patients is read while training. The network then predicts each held-out
patient's slice stack, and the table gives Dice on tumour slices and the share of tumour-free
slices (tagged absent) where it paints any tumour, as ``semiseg benchmark weak`` scores them.

    python benchmarks/weak_defaults.py --out runs/weak_defaults \\
        --table benchmarks/results/lgg_weak_defaults.md [-- extra train options]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LGG = ROOT.parent / "shared" / "data" / "lgg_brain_mri_2d"


def train_only_view(src: Path, patients: set[str], dest: Path) -> Path:
    """A dataset folder holding only ``patients``: links to the images and masks, and their
    rows of index.csv."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    with open(src / "index.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient"] in patients]
    for r in rows:
        for key in ("image", "mask"):
            link = dest / r[key]
            if not link.exists():
                link.symlink_to(src / r[key])
    with open(dest / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(LGG))
    ap.add_argument("--out", required=True, help="work folder")
    ap.add_argument("--table", required=True)
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("extra", nargs="*", help="options passed on to semiseg train")
    args = ap.parse_args()
    split = json.loads((ROOT / "benchmarks" / "splits" / "lgg.json").read_text())
    out = Path(args.out)
    view = train_only_view(Path(args.data), set(split["train"]), out / "train_patients")
    model = out / "cam_weak.pt"
    cmd = [sys.executable, "-m", "training", "train", "--data", str(view), "--method",
           "cam_weak", "--tags", str(view / "index.csv"), "--out", str(model), *args.extra]
    shown = ("semiseg train --data <train patients> --method cam_weak --tags "
             f"<train patients>/index.csv --out {model} {' '.join(args.extra)}").strip()
    log = out / "train.log"
    t0 = time.perf_counter()
    if not model.exists():
        with open(log, "w") as fh:
            subprocess.run(cmd, check=True, stderr=fh, cwd=ROOT)
    seconds = time.perf_counter() - t0
    warnings = [ln.strip() for ln in log.read_text().splitlines() if "WARNING" in ln]

    from training.bench.weak_benchmark import _predict, _scores, load_patients

    patients = load_patients(args.data)
    lines = ["# Weak labels with the command's defaults, on unseen LGG patients", "",
             f"- command: `python benchmarks/weak_defaults.py --out {args.out} --table "
             f"{args.table} --splits {' '.join(args.splits)}"
             f"{' -- ' + ' '.join(args.extra) if args.extra else ''}`, which runs "
             f"`{shown}` on the {len(split['train'])} train patients of "
             "benchmarks/splits/lgg.json",
             f"- training: {seconds:.0f} s; collapse warnings: "
             f"{'; '.join(warnings) if warnings else 'none'}", "",
             "| patients | n | Dice on tumour slices (mean ± SD over slices) | tumour slices | "
             "false-positive tumour-free slices |",
             "|---|---|---|---|---|"]
    for name in args.splits:
        test = {p: patients[p] for p in split[name]}
        s = _scores(_predict(str(model), test), test)
        fp = f"{100 * s['fp_rate']:.1f} % of {s['n_neg']}" if s["fp_rate"] is not None else "—"
        lines.append(f"| {name} | {len(test)} | {100 * s['dice']:.1f} ± "
                     f"{100 * s['dice_sd']:.1f} | {s['n_pos']} | {fp} |")
        print(lines[-1], flush=True)
    Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-class test Dice and predict time of every shipped model, by `semiseg predict` + `evaluate`.

For each model: the held-out test scans named on its card are gathered in a work folder (links
for NIfTI; an LGG patient's PNG slices stacked into one volume, as the dock opens them),
`semiseg predict` segments them (timed, wall clock of the command), `semiseg evaluate` scores
them against the expert labels. Predict + uncertainty on a 100 x 256 x 256 volume comes from
`semiseg benchmark speed` over all models side by side (median of repeats).

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python benchmarks/model_library.py \
        --data-root ../shared/data --out benchmarks/results/model_library.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.engine.checkpoint import read_meta
from training.engine.data import scan_dataset

MODELS = Path(__file__).resolve().parents[1] / "napari_semiseg" / "models"
DATA = {"acdc_unet2d.pt": "acdc", "la_unet2d.pt": "left_atrium_2018",
        "lgg_flair_unet2d.pt": "lgg_brain_mri_2d"}
SPLITS = Path(__file__).resolve().parent / "splits"


def gather(data: Path, work: Path) -> int:
    """Test-split images and labels into ``work/images`` and ``work/labels``; returns count.

    NIfTI scans are linked. 2-D slices (LGG) get one folder per test patient of
    ``benchmarks/splits/lgg.json`` (the card's test split), which `semiseg predict` reads as
    one stack with every channel, as the dock opens it."""
    (work / "images").mkdir(parents=True)
    (work / "labels").mkdir()
    cases = scan_dataset(data)
    if all(c.patient is not None and str(c.image).lower().endswith(".png") for c in cases):
        test = json.loads((SPLITS / "lgg.json").read_text(encoding="utf-8"))["test"]
        for pid in test:
            for sub in ("images", "labels"):
                (work / sub / pid).mkdir()
            for c in (c for c in cases if c.patient == pid):
                for src, sub in ((c.image, "images"), (c.label, "labels")):
                    (work / sub / pid / Path(src).name).symlink_to(Path(src).resolve())
        return len(test)
    test = [c for c in cases if c.split == "test"]
    for c in test:
        for src, sub in ((c.image, "images"), (c.label, "labels")):
            (work / sub / Path(src).name).symlink_to(Path(src).resolve())
    return len(test)


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(shlex.quote(a) for a in cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", choices=list(DATA), default=list(DATA),
                    help="which shipped models (default: all)")
    args = ap.parse_args()
    semiseg = [sys.executable, "-m", "training"]
    rows, speed_models = [], []
    for name in args.models:
        folder = DATA[name]
        model = MODELS / name
        meta = read_meta(model)
        speed_models.append(str(model))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            n = gather(Path(args.data_root) / folder, work)
            wall = run([*semiseg, "predict", "--model", str(model), "--input",
                        str(work / "images"), "--output", str(work / "pred"),
                        "--uncertainty", str(work / "unc"), "--device", "cpu"])
            run([*semiseg, "evaluate", "--pred", str(work / "pred"), "--labels",
                 str(work / "labels"), "--num-classes", str(meta["num_classes"]),
                 "--json", str(work / "scores.json")])
            scores = json.loads((work / "scores.json").read_text(encoding="utf-8"))
        rows.append((name, meta, n, wall, scores))
    speed_md = Path(args.out).with_name(Path(args.out).stem + "_speed.md")
    run([*semiseg, "benchmark", "speed", "--models", *speed_models, "--volume",
         str(Path(args.data_root) / "acdc/images/patient001_frame01.nii.gz"), "--shape", "100",
         "256", "256", "--mc", "0", "--repeats", str(args.repeats), "--out", str(speed_md)])
    Path(args.out).write_text(render(rows, speed_md.read_text(encoding="utf-8"), args),
                              encoding="utf-8")
    print(Path(args.out).read_text(encoding="utf-8"))
    return 0


def render(rows, speed: str, args) -> str:
    lines = ["# Model library: test Dice per class and predict time", "",
             f"- command: `PYTHONPATH=. .venv/bin/python benchmarks/model_library.py "
             f"--data-root {args.data_root} --out {args.out} --repeats {args.repeats}"
             f"{'' if args.models == list(DATA) else ' --models ' + ' '.join(args.models)}`",
             "- Dice and HD95: `semiseg predict` on each model's held-out test scans, then "
             "`semiseg evaluate` (3-D, per scan, mean ± sd over scans)", ""]
    for name, meta, n, wall, scores in rows:
        names = meta.get("class_names") or []
        lines += [f"## {name} ({n} test scans; `semiseg predict` took {wall:.1f} s, "
                  f"{wall / n:.2f} s per scan incl. reading and writing)", "",
                  "| class | Dice | HD95 |", "|---|---|---|"]
        # JSON null (a class in neither prediction nor label) becomes NaN: not scored
        dice = np.array([c["dice"] for c in scores["cases"].values()], dtype=float)
        hd = np.array([c["hd95"] for c in scores["cases"].values()], dtype=float)
        for k in range(dice.shape[1]):
            label = names[k + 1] if k + 1 < len(names) else f"class {k + 1}"
            lines.append(f"| {label} | {_ms(100 * dice[:, k])} | {_ms(hd[:, k])} |")
        per_scan = np.nanmean(dice, axis=1)
        lines.append(f"| mean over classes | {_ms(100 * per_scan)} | {_ms(np.nanmean(hd, 1))} |")
        lines.append("")
    lines += ["## Predict + uncertainty on 100 x 256 x 256 (`semiseg benchmark speed`)", "",
              speed]
    return "\n".join(lines) + "\n"


def _ms(v: np.ndarray) -> str:
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    return "n/a" if not len(v) else f"{v.mean():.1f} ± {v.std():.1f}"


if __name__ == "__main__":
    raise SystemExit(main())

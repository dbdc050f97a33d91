"""Which fill between painted slices to show first: shape interpolation, ITK's morphological
contour interpolation, or an image-aware prior (``training.interactive.image_priors``).

For each scan and each K, the K painted slices are those of the baseline (evenly spaced from
the structure's first to its last slice, ``training.interactive.interpolation.even_slices``, as
``training.bench.effort.fixed_k_rows`` paints them); every fill is scored by Dice on the other
slices
(``training.engine.metrics.mean_dice``; a scan with no structure on its other slices
is left out). ITK's interpolation is a column only when the optional
``bench`` extra is installed. Choose on train / val scans; run ``--test`` once on test scans.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prior_choice.py \
        --data ../shared/data/left_atrium_2018 --split train --ks 3,5,8 \
        --out benchmarks/results/prior_choice.md --title "LA train"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

BASELINE = "interpolation"
ITK = "ITK contour interpolation"


def fills(sparse: np.ndarray, image: np.ndarray, painted: list[int], priors: list[str],
          itk=None) -> dict[str, tuple[np.ndarray, float]]:
    """Each fill's labels and its seconds of CPU time (``itk``: a ContourInterpolator, whose
    child process's time is wall time)."""
    from training.interactive.image_priors import fill_between_slices
    from training.interactive.interpolation import interpolate_between_slices

    runs = {BASELINE: lambda: interpolate_between_slices(sparse, painted)}
    if itk is not None:
        runs[ITK] = lambda: itk(sparse, painted)
    for p in priors:
        runs[p] = lambda p=p: fill_between_slices(sparse, image, p, painted)
    out = {}
    for name, run in runs.items():
        clock = time.perf_counter if name == ITK else time.process_time
        t0 = clock()
        labels = run()
        out[name] = (labels, clock() - t0)
    return out


def score_scans(scans, ks: list[int], priors: list[str], itk=None, log=print) -> list[dict]:
    """One row per scan and K: Dice on the unpainted slices and CPU seconds per fill."""
    from training.engine.metrics import mean_dice
    from training.interactive.interpolation import even_slices
    from training.interactive.loop import sparse_labels

    rows = []
    for name, image, truth, _ in scans:
        for k in ks:
            painted = even_slices(truth, k)
            rest = [z for z in range(len(truth)) if z not in painted]
            sparse = sparse_labels(truth, painted)
            row = {"scan": name, "k": k, "painted": painted, "dice": {}, "seconds": {}}
            for method, (labels, sec) in fills(sparse, image, painted, priors, itk).items():
                row["dice"][method] = 100 * mean_dice(labels[rest], truth[rest])
                row["seconds"][method] = sec
            rows.append(row)
            log(f"{name} K={k}: " + ", ".join(f"{m} {d:.1f} ({row['seconds'][m]:.1f} s)"
                                               for m, d in row["dice"].items()))
    return rows


def summary_table(rows: list[dict], margin: float = 2.0) -> str:
    """Per K and fill: mean ± SD Dice, scans won against interpolation (and by ``margin``),
    mean CPU seconds."""
    lines = ["| K | fill | Dice mean ± SD | wins vs interpolation | ≥ interpolation + "
             f"{margin:g} | CPU s per scan |", "|---|---|---|---|---|---|"]
    for k in sorted({r["k"] for r in rows}):  # scans with nothing left to fill are left out
        kr = [r for r in rows if r["k"] == k and not np.isnan(r["dice"][BASELINE])]
        base = np.array([r["dice"][BASELINE] for r in kr])
        for m in kr[0]["dice"]:
            d = np.array([r["dice"][m] for r in kr])
            sec = np.mean([r["seconds"][m] for r in kr])
            wins = "—" if m == BASELINE else f"{int((d > base).sum())} / {len(d)}"
            plus = "—" if m == BASELINE else f"{int((d >= base + margin).sum())} / {len(d)}"
            lines.append(f"| {k} | {m} | {d.mean():.1f} ± {d.std():.1f} | {wins} | {plus} | "
                         f"{sec:.2f} |")
    return "\n".join(lines) + "\n"


def per_scan_table(rows: list[dict]) -> str:
    methods = list(rows[0]["dice"])
    lines = ["| scan | K | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for r in rows:
        lines.append(f"| {r['scan']} | {r['k']} | "
                     + " | ".join(f"{r['dice'][m]:.1f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def load(data: str, split: str | None, patients: list[str] | None, n: int | None):
    """(name, grey image, labels, number of classes) per scan, in index order."""
    from training import IGNORE_INDEX
    from training.engine.data import class_names_from_index
    from training.library.model_card import dataset_scans

    names = class_names_from_index(data)
    out = []
    for name, image, labels, _, _ in dataset_scans(data, split, patients):
        truth = np.where(labels == IGNORE_INDEX, 0, labels).astype(np.uint8)
        out.append((name, image, truth, len(names) if names else int(truth.max()) + 1))
        if n and len(out) == n:
            break
    return out


def override_settings(pairs: list[str]) -> dict[str, object]:
    """Set module constants of training.interactive.image_priors from NAME=VALUE (a comma makes
    a tuple); returns every setting in force."""
    import training.interactive.image_priors as ip

    for pair in pairs:
        name, value = pair.split("=", 1)
        if not name.isupper() or not hasattr(ip, name):
            raise SystemExit(f"--set: training.interactive.image_priors has no setting {name!r}")
        values = [float(v) if "." in v else int(v) for v in value.split(",")]
        setattr(ip, name, tuple(values) if len(values) > 1 else values[0])
    return {n: getattr(ip, n) for n in ip.SETTINGS}


def itk_note(left_out: bool, used: bool) -> str:
    if used:
        return " (ITK's: wall seconds in its own process, ITK loaded beforehand)"
    return "; ITK contour interpolation " + ("left out" if left_out else "not installed, skipped")


def main(argv: list[str] | None = None) -> int:
    from training.bench.contour_interpolation import (
        INSTALL_HINT,
        ContourInterpolator,
        contour_interpolation_available,
    )
    from training.interactive.image_priors import PRIORS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None, help="split of index.csv")
    p.add_argument("--patients", default="",
                   help="comma-separated patients, or SPLITS.json:NAME for a list in a file")
    p.add_argument("--n", type=int, default=None, help="only the first N scans")
    p.add_argument("--ks", default="3,5,8")
    p.add_argument("--priors", default=",".join(PRIORS))
    p.add_argument("--threads", type=int, default=1, help="SimpleITK / ITK threads")
    p.add_argument("--no-itk", action="store_true", help="leave ITK's interpolation out")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a setting of training.interactive.image_priors (e.g. BAND=2,0.5)")
    p.add_argument("--title", required=True)
    p.add_argument("--out", required=True, help="Markdown file the section is appended to")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)

    import SimpleITK as sitk

    settings = override_settings(a.set)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    use_itk = not a.no_itk and contour_interpolation_available()
    if not a.no_itk and not use_itk:
        print(f"skipping ITK contour interpolation: {INSTALL_HINT}", file=sys.stderr)
    patients = None
    if ":" in a.patients:
        path, key = a.patients.rsplit(":", 1)
        patients = json.loads(Path(path).read_text())[key]
    elif a.patients:
        patients = a.patients.split(",")
    scans = load(a.data, a.split, patients, a.n)
    ks = [int(k) for k in a.ks.split(",")]
    priors = [s for s in a.priors.split(",") if s]
    t0 = time.time()
    with ExitStack() as stack:
        itk = stack.enter_context(ContourInterpolator(a.threads)) if use_itk else None
        rows = score_scans(scans, ks, priors, itk)
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/prior_choice.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    text = (f"\n## {a.title}\n\n`{command}`\n\n{len(scans)} scans; Dice (%) on the unpainted "
            f"slices; CPU seconds of one process with {a.threads} thread(s)"
            f"{itk_note(a.no_itk, use_itk)}; "
            f"{time.time() - t0:.0f} s in all. Settings: "
            + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".\n\n"
            + summary_table(rows) + "\n<details><summary>per scan</summary>\n\n"
            + per_scan_table(rows) + "\n</details>\n")
    with open(a.out, "a") as f:
        f.write(text)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

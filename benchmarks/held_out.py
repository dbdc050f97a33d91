"""What the choice scripts share: a model and the held-out scans it is scored on.

``postprocess_choice.py``, ``mirror_choice.py`` (and their kin) choose one setting of a model's
card on a split or on named patients; this reads the same arguments and yields the same scans
for each, as the model reads them (every channel of an RGB scan for a model that reads three).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None, help="split name; '' = every scan")
    p.add_argument("--patients", default="", help="comma-separated patients instead of a split")
    p.add_argument("--out", required=True)


def model_and_scans(a: argparse.Namespace):
    """(model, meta, scans): scans yields (name, image, labels, spacing, channels)."""
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels
    from training.library.model_card import dataset_scans

    model, meta = load_checkpoint(a.model, device="cpu")
    patients = [s for s in a.patients.split(",") if s] or None
    scans = dataset_scans(a.data, a.split or None, patients,
                          keep_channels=model_channels(meta) > 1)
    return model, meta, scans


def write_report(path: str, lines: list[str]) -> int:
    """Write a choice script's Markdown ``lines`` to ``path``, echo them, and return 0."""
    text = "\n".join(lines) + "\n"
    with open(path, "w") as fh:
        fh.write(text)
    print(text)
    return 0


def add_fold_arguments(p: argparse.ArgumentParser) -> None:
    """The out-of-fold scripts' arguments: ``--fold MODEL=P1,P2,...`` (a model and the patients
    it never trained on), repeated."""
    p.add_argument("--data", required=True)
    p.add_argument("--fold", action="append", required=True, metavar="MODEL=P1,P2,...")
    p.add_argument("--out", required=True)


def fold_scans(p: argparse.ArgumentParser, a: argparse.Namespace):
    """Per fold, (k, model, meta, scans): every patient a fold names, read as its model reads
    it; a fold naming no patient, or one whose patients are not all found, is refused."""
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels
    from training.library.model_card import dataset_scans

    for k, spec in enumerate(a.fold):
        path, _, names = spec.partition("=")
        patients = [s for s in names.split(",") if s]
        if not patients:
            p.error(f"--fold {spec!r} names no patients")
        model, meta = load_checkpoint(path, device="cpu")
        scans = list(dataset_scans(a.data, None, patients,
                                   keep_channels=model_channels(meta) > 1))
        if len(scans) != len(patients):
            p.error(f"fold {k}: {len(scans)} labelled scans found for {len(patients)} patients")
        yield k, model, meta, scans


def fold_table(rows: list, columns: list[str], n_folds: int, base: str) -> list[str]:
    """Markdown table of ``rows`` ((fold, patient, scores per column)), its mean ± sd row, and
    each column against the first (``base``): mean difference, patients better and worse,
    folds lower."""
    import numpy as np

    s = np.array([r[2] for r in rows])
    folds = np.array([r[0] for r in rows])
    lines = ["| fold | patient | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    lines += [f"| {k} | {name} | " + " | ".join(f"{v:.1f}" for v in sc) + " |"
              for k, name, sc in rows]
    lines.append("| | **mean ± sd** | " + " | ".join(
        f"**{m:.2f} ± {d:.1f}**" for m, d in zip(s.mean(0), s.std(0), strict=True)) + " |")
    lines.append("")
    for j, c in enumerate(columns[1:], start=1):
        diff = s[:, j] - s[:, 0]
        fold_diff = [float(diff[folds == k].mean()) for k in range(n_folds)]
        lines.append(f"- {c} − {base}: mean {diff.mean():+.2f}; better on {(diff > 0).sum()}, "
                     f"worse on {(diff < 0).sum()} of {len(diff)} patients; lower on "
                     f"{sum(d < 0 for d in fold_diff)} of {len(fold_diff)} folds "
                     f"({', '.join(f'{d:+.2f}' for d in fold_diff)})")
    return lines


def fold_report(title: str, script: str, argv: list[str] | None, n_folds: int, rows: list,
                columns: list[str], scoring: str, started: float) -> list[str]:
    """An out-of-fold script's Markdown: ``title``, the command that ran ``script``, what was
    scored and how long it took, then :func:`fold_table` against the first column."""
    cmd = " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    return [f"# {title}", "",
            f"- command: `PYTHONPATH=benchmarks:. python benchmarks/{script} {cmd}`",
            f"- {len(rows)} patients in {n_folds} folds; each scored by the model that never "
            f"trained on it; {scoring}; {time.time() - started:.0f} s",
            "", *fold_table(rows, columns, n_folds, columns[0])]

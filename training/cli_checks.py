"""Checks the ``semiseg`` commands make on their arguments before any work (issue 24).

Outputs are resolved against every input (:mod:`training.core.output_paths`), sizes against the
network, counts against the data: a mistake is reported in one line naming the file or the
option, before hours of work, never as a traceback or a silently changed request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.core.io import DataError
from training.engine.checkpoint import companion_path
from training.engine.networks import check_size  # noqa: F401 (the commands' check)


def dataset_paths(root: str) -> tuple[list[Path], list[Path]]:
    """The files a dataset folder's training reads, and the folders they lie in (a DICOM
    series folder under ``images/`` counts as both)."""
    from training.core.dicom import series_dataset
    from training.engine.data import scan_dataset

    files: list[Path] = [Path(root) / "index.csv"]
    with series_dataset(root) as view:  # images/<case>/ may be a DICOM series folder
        for c in scan_dataset(view):
            files += [c.image] + ([c.label] if c.label is not None else [])
    folders = sorted({f.parent for f in files[1:]} | {f for f in files[1:] if f.is_dir()}
                     | {Path(root) / d for d in ("images", "labels", "masks")
                        if (Path(root) / d).is_dir()})
    return files, folders


def check_labeled(root: str, labeled: str | None) -> None:
    """``--labeled N`` asks for N patients: more than the train split holds is a mistake, not
    a request for all of them."""
    from training.engine.data import scan_dataset

    if labeled is None or not labeled.strip().isdigit():
        return
    pool = [c for c in scan_dataset(root) if c.split is None or c.split == "train"]
    patients = {c.patient or c.name for c in pool}
    if int(labeled) > len(patients):
        raise DataError(f"--labeled {labeled}: {root} has only {len(patients)} patients in its "
                        f"train pool; give at most {len(patients)}")


def check_train_paths(args: argparse.Namespace) -> None:
    """Before the first step: the checkpoint (and its companion files) may not overwrite the
    data, the --init model or the tags, and their folder must be writable."""
    from training.core.output_paths import check_outputs

    out = Path(args.out)
    outputs = [("--out", out)] + [(f"--out's {name} file", companion_path(out, name))
                                  for name in ("resume", "teacher", "classifier")]
    files, folders = dataset_paths(args.data)
    check_outputs(outputs, [*files, *(p for p in (args.init, args.tags) if p)], folders)


def card_classes(model: str | None, num_classes: int | None) -> int | None:
    """The class count given on the command line: --num-classes, or the --model's card."""
    from training.engine.checkpoint import read_meta

    if not model:
        return num_classes
    n = int(read_meta(model)["network"]["num_classes"])
    if num_classes is not None and num_classes != n:
        raise DataError(f"--num-classes {num_classes} contradicts --model {model}, which has "
                        f"{n} classes")
    return n


def check_report_paths(args: argparse.Namespace) -> None:
    """The outputs of card, pretrain, simulate and the benchmarks, resolved against what they
    read before any work (train, predict and evaluate check their own)."""
    from training.core.output_paths import check_output_folder, check_outputs

    cmd, bench = args.command, getattr(args, "benchmark", None)
    outputs: list[tuple[str, str | Path]] = []
    data = [d for d in (args.data if isinstance(getattr(args, "data", None), list)
                        else [getattr(args, "data", None)]) if d]
    inputs = [p for p in (getattr(args, k, None) for k in ("model", "volume", "tags",
                                                            "pretrained")) if p]
    inputs += list(getattr(args, "models", None) or [])
    if getattr(args, "start", "scratch") not in (None, "scratch"):
        inputs.append(args.start)
    if cmd == "card" and args.markdown:
        outputs.append(("--markdown", args.markdown))
    elif cmd in ("pretrain", "simulate") and args.out:
        outputs.append(("--out", args.out))
    elif cmd == "benchmark" and bench == "weak":
        check_output_folder(args.out, "--out")
        outputs += [("--out", Path(args.out) / "results.json")]
        outputs += [("--table", args.table)] if args.table else []
    elif cmd == "benchmark":
        outputs.append(("--out", args.out))
        if bench == "label-efficiency":
            check_output_folder(Path(args.out).with_suffix(".runs"), "--out's run folder")
    if not outputs:
        return
    folders: list[Path] = []
    for d in data:
        files, dirs = dataset_paths(d)
        inputs += files
        folders += dirs
    check_outputs(outputs, inputs, folders)

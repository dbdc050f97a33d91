"""Slice tags: "this slice contains the structure" (1) or "it does not" (0).

The tag file is a CSV with columns ``case,slice,tag``. For a 2-D image file, ``case`` is its file
stem and ``slice`` is 0. Two existing files are read as tag files too:

- LGG ``index.csv`` (columns ``image``, ``has_tumor``): one 2-D PNG per row, case = image stem;
- ACDC ``slices.csv`` (columns ``case``, ``z``, ``has_any`` or ``has_<class>``).

In arrays, a volume's tags are one int8 per slice along z: 1, 0, or :data:`UNTAGGED` (-1).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from training.core.io import DataError, case_name

UNTAGGED = -1
Tags = dict[tuple[str, int], int]  # (case, slice) -> 0 | 1


def _tag_value(text: str, where: str) -> int:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "pos", "positive"):
        return 1
    if t in ("0", "false", "no", "neg", "negative"):
        return 0
    raise DataError(f"{where}: tag {text!r} is not 0/1 (or yes/no, positive/negative)")


def read_tags(path: str | Path, column: str | None = None) -> Tags:
    """Read a tag CSV (``case,slice,tag``, LGG ``index.csv`` or ACDC ``slices.csv``).

    ``column`` picks the tag column of an ACDC-style file (default ``has_any``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tag file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DataError(f"{path}: no rows")
    cols = set(rows[0])
    tags: Tags = {}
    for n, row in enumerate(rows, start=2):
        where = f"{path}:{n}"
        if {"case", "slice", "tag"} <= cols and column is None:
            key = (row["case"], int(row["slice"]))
            value = row["tag"]
        elif "has_tumor" in cols and "image" in cols:  # LGG index.csv: one PNG per row
            key = (case_name(row["image"]), 0)
            value = row[column or "has_tumor"]
        elif "case" in cols and "z" in cols:  # ACDC slices.csv
            col = column or "has_any"
            if col not in cols:
                raise DataError(f"{path} has no column {col!r}")
            key = (row["case"], int(row["z"]))
            value = row[col]
        else:
            found = ", ".join(sorted(cols))
            raise DataError(f"{path}: need columns case,slice,tag (found {found})")
        tags[key] = _tag_value(value, where)
    return tags


def write_tags(path: str | Path, tags: Mapping[tuple[str, int], int]) -> None:
    """Write tags as a ``case,slice,tag`` CSV."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "slice", "tag"])
        for (case, z), t in sorted(tags.items()):
            w.writerow([case, z, int(t)])


def volume_tags(tags: Mapping[tuple[str, int], int], case: str, n_slices: int) -> np.ndarray:
    """Per-slice tags of one volume: int8 array of 1 / 0 / :data:`UNTAGGED`."""
    out = np.full(n_slices, UNTAGGED, dtype=np.int8)
    for (c, z), t in tags.items():
        if c == case:
            if not 0 <= z < n_slices:
                raise DataError(f"tag for {case} slice {z} is outside 0..{n_slices - 1}")
            out[z] = t
    return out


def tag_counts(tags: np.ndarray | Mapping) -> dict[str, int]:
    """How many slices are tagged positive and negative."""
    values = np.asarray(list(tags.values()) if isinstance(tags, Mapping) else tags)
    return {"positive": int((values == 1).sum()), "negative": int((values == 0).sum())}

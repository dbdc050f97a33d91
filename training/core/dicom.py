"""DICOM series in a folder: which series there are, which one the user chose, and whether its
slices form a regular stack.

SimpleITK (GDCM) does the work and is the only dependency: a plain DICOM series must open
without the optional ``dicom`` extra. What SimpleITK gets silently wrong is caught here:

- given a folder of several series, a reader must pick one (this project once took the
  largest, silently): such a folder is refused unless one is chosen, by number, description
  or UID (:func:`choose_series`);
- it stacks a series with a missing slice, or unevenly spaced slices, onto a regular grid with
  only a warning on stderr, so voxels land at the wrong place: :func:`check_stack` refuses it
  and names the file where the stack breaks.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
NON_IMAGE_MODALITIES = ("SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RTPLAN", "RTDOSE")
GAP_RTOL = 0.02  # slice gaps may differ this much (relative) before a series counts as uneven
GAP_ATOL = 0.01  # mm; DICOM stores positions as decimal strings


class DicomError(ValueError):
    """A DICOM folder that cannot be read as one regular scan; the message names the file."""


@dataclass
class SeriesInfo:
    """One image series of a folder, with what a user recognises it by."""

    uid: str
    files: list[str]  # in slice order (GDCM sorts along the slice normal)
    description: str
    number: str
    modality: str
    rows: int
    columns: int

    def label(self) -> str:
        """One line a user chooses by: description and size first."""
        desc = self.description or "(no description)"
        number = f", series {self.number}" if self.number else ""
        return (f"{desc!r}: {len(self.files)} slices of {self.rows}x{self.columns}"
                f"{f' {self.modality}' if self.modality else ''}{number}")


def _tags(path: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Header values of one file (no pixel data read); missing keys are ''."""
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    r.LoadPrivateTagsOff()
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise DicomError(f"{path}: not a readable DICOM file ({_last_line(e)})") from e
    return {k: r.GetMetaData(k).strip() if r.HasMetaDataKey(k) else "" for k in keys}


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def looks_dicom(path: str | os.PathLike) -> bool:
    """A file with the DICOM preamble ("DICM" at byte 128), or named .dcm / .ima."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_seg_file(path: str | os.PathLike) -> bool:
    """True for a DICOM Segmentation object (DICOM-SEG)."""
    p = Path(path)
    if not p.is_file() or not looks_dicom(p):
        return False
    try:
        tags = _tags(str(p), ("0008|0016", "0008|0060"))
    except DicomError:
        return False
    return tags["0008|0016"] == SEG_SOP_CLASS or tags["0008|0060"] == "SEG"


def holds_dicom(folder: str | os.PathLike) -> bool:
    """A folder with at least one file that looks like DICOM (cheap: no header parsed)."""
    p = Path(folder)
    return p.is_dir() and any(f.is_file() and looks_dicom(f) for f in p.iterdir())


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The image series of a folder (segmentations, reports and the like are left out)."""
    folder = str(folder)
    reader = sitk.ImageSeriesReader
    out = []
    for uid in reader.GetGDCMSeriesIDs(folder):
        files = list(reader.GetGDCMSeriesFileNames(folder, uid))
        if not files:
            continue
        t = _tags(files[0], ("0008|0016", "0008|0060", "0008|103e", "0020|0011", "0028|0010",
                             "0028|0011"))
        if t["0008|0016"] == SEG_SOP_CLASS or t["0008|0060"] in NON_IMAGE_MODALITIES:
            continue
        out.append(SeriesInfo(uid, files, t["0008|103e"], t["0020|0011"], t["0008|0060"],
                              int(t["0028|0010"] or 0), int(t["0028|0011"] or 0)))
    return out


def series_listing(series: list[SeriesInfo]) -> str:
    return "; ".join(f"{i}) {s.label()}" for i, s in enumerate(series, 1))


def choose_series(folder: str | os.PathLike, series: list[SeriesInfo],
                  choice: str | None = None) -> SeriesInfo:
    """The series ``choice`` names: its UID, its series number, its place in the listing
    (1, 2, …) or its description (whole, any case). With one series no choice is needed."""
    if not series:
        raise DicomError(f"{folder}: folder holds no DICOM image series")
    if choice is None or str(choice).strip() == "":
        if len(series) == 1:
            return series[0]
        raise DicomError(f"{folder}: folder holds {len(series)} DICOM series; choose one "
                         f"(semiseg: --series NUMBER|DESCRIPTION|UID): {series_listing(series)}")
    c = str(choice).strip()
    for match in (
        lambda s, i: s.uid == c,
        lambda s, i: c.isdigit() and s.number == c,
        lambda s, i: c.lower() == s.description.lower(),
        lambda s, i: c.isdigit() and int(c) == i,
    ):
        hits = [s for i, s in enumerate(series, 1) if match(s, i)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DicomError(f"{folder}: {c!r} names {len(hits)} series; give the UID: "
                             f"{series_listing(hits)}")
    raise DicomError(f"{folder}: no DICOM series {c!r}; the folder holds: "
                     f"{series_listing(series)}")


def check_stack(series: SeriesInfo) -> None:
    """Refuse a series whose slices do not form one regular stack, naming the file.

    Mixed slice sizes or orientations, two slices at one position, a missing slice or uneven
    gaps: SimpleITK would still return a regular volume, with voxels in the wrong place.
    """
    if len(series.files) < 2:
        return  # one file: a single slice, or a multi-frame object GDCM lays out itself
    keys = ("0020|0032", "0020|0037", "0028|0010", "0028|0011")
    rows = [(f, _tags(f, keys)) for f in series.files]
    first_file, first = rows[0]
    for f, t in rows:
        if (t["0028|0010"], t["0028|0011"]) != (first["0028|0010"], first["0028|0011"]):
            raise DicomError(f"{f}: slice is {t['0028|0010']}x{t['0028|0011']} pixels where "
                             f"{Path(first_file).name} is {first['0028|0010']}x"
                             f"{first['0028|0011']}: not one series")
    try:
        orient = [np.array(t["0020|0037"].split("\\"), float) for _, t in rows]
        pos = [np.array(t["0020|0032"].split("\\"), float) for _, t in rows]
    except ValueError:
        bad = next(f for f, t in rows if len(t["0020|0032"].split("\\")) != 3
                   or len(t["0020|0037"].split("\\")) != 6)
        raise DicomError(f"{bad}: slice has no usable position or orientation; cannot "
                         f"stack the series") from None
    for (f, _), o in zip(rows, orient, strict=True):
        if o.shape != (6,) or not np.allclose(o, orient[0], atol=1e-4):
            raise DicomError(f"{f}: slice is oriented differently from "
                             f"{Path(first_file).name}: not one stack")
    normal = np.cross(orient[0][:3], orient[0][3:])
    depth = np.array([p @ normal for p in pos])
    order = np.argsort(depth, kind="stable")
    gaps = np.diff(depth[order])
    names = [series.files[i] for i in order]
    for k, g in enumerate(gaps):
        if abs(g) <= GAP_ATOL:
            raise DicomError(f"{names[k + 1]}: slice lies at the same position as "
                             f"{Path(names[k]).name}: two slices in one place")
    step = float(np.median(gaps))
    for k, g in enumerate(gaps):
        if abs(g - step) > max(GAP_RTOL * step, GAP_ATOL):
            what = (f"about {round(g / step) - 1} slice(s) missing before it"
                    if g > 1.5 * step else "uneven slice spacing")
            raise DicomError(f"{names[k + 1]}: slice lies {g:.4g} mm after "
                             f"{Path(names[k]).name} where the others are {step:.4g} mm "
                             f"apart ({what}); the series is refused, not stretched")


def first_position(series: SeriesInfo) -> np.ndarray:
    """Image Position (Patient) of the series' first slice in slice order: its origin."""
    value = _tags(series.files[0], ("0020|0032",))["0020|0032"]
    try:
        return np.array(value.split("\\"), float)
    except ValueError:
        return np.full(3, np.nan)


def frame_of_reference(series: SeriesInfo) -> str:
    """Frame of Reference UID of the series ('' when its first file has none)."""
    return _tags(series.files[0], ("0020|0052",))["0020|0052"]


def is_series_folder(path: str | os.PathLike) -> bool:
    """A folder that is one scan: DICOM image series (one or several to choose from)."""
    p = Path(path)
    if not holds_dicom(p) or any(f.suffix.lower() == ".png" for f in p.iterdir()):
        return False
    return bool(list_series(p))


def file_series(path: str | os.PathLike) -> str:
    """The Series Instance UID of one DICOM file."""
    return _tags(str(path), ("0020|000e",))["0020|000e"]


@contextmanager
def series_dataset(root: str | os.PathLike) -> Iterator[Path]:
    """A dataset folder whose ``images/`` holds DICOM series folders, as the dataset reader
    takes it: that reader lists ``images/<case>.*`` files, but an ``index.csv`` may name any
    path, so a temporary index names each series folder (and its label file, a DICOM-SEG or
    any label map in ``labels/`` or ``masks/``). Any other folder is yielded as it is.
    """
    from training.core.io import IMAGE_SUFFIXES, SEG_SUFFIX, DataError, case_name

    root = Path(root)
    images = root / "images"
    if (root / "index.csv").exists() or not images.is_dir():
        yield root
        return
    entries = {p.name if p.is_dir() else case_name(p): p for p in sorted(images.iterdir())
               if p.name.lower().endswith(IMAGE_SUFFIXES) or (p.is_dir() and is_series_folder(p))}
    if not any(p.is_dir() for p in entries.values()):
        yield root
        return
    label_dir = next((d for d in (root / "labels", root / "masks") if d.is_dir()), None)
    labels = {case_name(p): p for p in sorted(label_dir.iterdir())
              if p.name.lower().endswith((*IMAGE_SUFFIXES, SEG_SUFFIX))} if label_dir else {}
    extra = sorted(set(labels) - set(entries))
    if extra:
        raise DataError(f"label without image: {extra[0]}")
    with tempfile.TemporaryDirectory(prefix="semiseg-series-") as tmp:
        with open(Path(tmp) / "index.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "image", "label"])
            for name, image in entries.items():
                label = labels.get(name)
                w.writerow([name, str(image.resolve()), str(label.resolve()) if label else ""])
        yield Path(tmp)

"""Reading and writing scans with their geometry, through SimpleITK.

SimpleITK arrays are (z, y, x) while its spacing, origin and direction are (x, y, z); napari
wants (z, y, x) everywhere. This module is the one place that flips between the two.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SLICE_SUFFIXES = (".png",)
WRITE_SUFFIXES = (".nii.gz", ".nrrd", ".mha")
LABEL_HINTS = ("label", "labels", "seg", "segmentation", "mask", "masks")
NOT_ANNOTATED = 255  # GUIDE §3: unannotated is not background
MAX_VOXELS = 1024**3  # beyond this a CPU loop is hopeless; refuse before allocating


class VolumeReadError(ValueError):
    """A file the plugin should handle but cannot read, with the reason and the file named."""


class LabelShapeError(ValueError):
    """A label map that does not fit the scan it is meant for."""


@dataclass
class Geometry:
    """Where a scan lies in physical space, in SimpleITK's (x, y, z) order."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    source: str = ""

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def scale(self) -> tuple[float, ...]:
        """Spacing in napari's (z, y, x) order."""
        return tuple(float(s) for s in self.spacing[::-1])

    @property
    def translate(self) -> tuple[float, ...]:
        """Origin in napari's (z, y, x) order."""
        return tuple(float(o) for o in self.origin[::-1])

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(
            spacing=tuple(float(v) for v in d["spacing"]),
            origin=tuple(float(v) for v in d["origin"]),
            direction=tuple(float(v) for v in d["direction"]),
            source=str(d.get("source", "")),
        )

    @classmethod
    def identity(cls, ndim: int, scale=None, translate=None) -> Geometry:
        """Geometry for data that has none: napari's scale/translate, axis-aligned."""
        scale = tuple(scale) if scale is not None else (1.0,) * ndim
        translate = tuple(translate) if translate is not None else (0.0,) * ndim
        return cls(
            spacing=tuple(float(s) for s in scale[::-1]),
            origin=tuple(float(t) for t in translate[::-1]),
            direction=tuple(np.eye(ndim).ravel().tolist()),
        )


@dataclass
class Volume:
    """A scan or label map as napari shows it: (z, y, x) array plus geometry."""

    data: np.ndarray
    geometry: Geometry
    is_labels: bool = False
    rgb: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)


def has_suffix(path: str | os.PathLike, suffixes=VOLUME_SUFFIXES + SLICE_SUFFIXES) -> bool:
    return str(path).lower().endswith(tuple(suffixes))


def strip_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name
    for s in VOLUME_SUFFIXES + SLICE_SUFFIXES + (".dcm",):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def looks_like_label_path(path: str | os.PathLike) -> bool:
    """True when the file or its folder is named like a label map (labels/, *_seg.nii.gz …)."""
    p = Path(path)
    words = re.split(r"[^a-z]+", (strip_suffix(p) + " " + p.parent.name).lower())
    return any(w in LABEL_HINTS for w in words)


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def dicom_series_files(folder: Path) -> list[str]:
    """The files of the (largest) DICOM series in a folder, in slice order."""
    reader = sitk.ImageSeriesReader
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        return []
    series = [reader.GetGDCMSeriesFileNames(str(folder), i) for i in ids]
    return list(max(series, key=len))


def png_slices(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if has_suffix(p, SLICE_SUFFIXES)), key=_natural_key)


def _read_sitk(path: Path) -> sitk.Image:
    if path.is_dir():
        pngs = png_slices(path)
        if pngs:
            return _read_png_stack(path, pngs)
        files = dicom_series_files(path)
        if not files:
            raise VolumeReadError(f"{path}: folder holds no DICOM series and no PNG slices")
        try:
            return sitk.ReadImage(files)
        except RuntimeError as e:
            raise VolumeReadError(f"{path}: DICOM series is unreadable ({_first_line(e)})") from e
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: file is empty")
    if str(path).lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise VolumeReadError(
            f"{path}: not a readable image, it may be truncated or corrupt ({_first_line(e)})"
        ) from e


def _check_nifti_complete(path: Path) -> None:
    """SimpleITK pads a truncated NIfTI with zeros instead of failing; catch that here."""
    import gzip
    import struct

    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            total = len(head)
            while chunk := f.read(1 << 20):  # stream: never hold a whole decompressed scan
                total += len(chunk)
    except (OSError, EOFError) as e:
        raise VolumeReadError(f"{path}: compressed data is truncated or corrupt ({e})") from e
    if len(head) < 348:
        raise VolumeReadError(f"{path}: file is truncated ({len(head)} bytes, no full header)")
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if sizeof_hdr == 540:
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        raise VolumeReadError(f"{path}: not a NIfTI file (bad header size)")
    ndim = max(1, min(int(dims[0]), 7))
    voxels = 1
    for d in dims[1 : ndim + 1]:
        voxels *= max(int(d), 1)
    expected = max(offset, 348) + voxels * max(int(bitpix), 8) // 8
    if total < expected:
        raise VolumeReadError(
            f"{path}: file is truncated: {total:,} bytes of data where the header promises "
            f"{expected:,}"
        )


def _read_png_stack(folder: Path, pngs: list[Path]) -> sitk.Image:
    sizes = {}
    for p in pngs:
        r = sitk.ImageFileReader()
        r.SetFileName(str(p))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise VolumeReadError(f"{p}: not a readable PNG ({_first_line(e)})") from e
        sizes.setdefault((r.GetSize(), r.GetNumberOfComponents()), []).append(p.name)
    if len(sizes) > 1:
        desc = "; ".join(f"{k[0]} x{k[1]}: {len(v)} files (e.g. {v[0]})" for k, v in sizes.items())
        raise VolumeReadError(f"{folder}: PNG slices differ in size, cannot stack them ({desc})")
    try:
        return sitk.ReadImage([str(p) for p in pngs])
    except RuntimeError as e:
        raise VolumeReadError(f"{folder}: PNG stack is unreadable ({_first_line(e)})") from e


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # SimpleITK puts the useful sentence last, after file/line noise
    return lines[-1] if lines else type(e).__name__


def read_volume(path: str | os.PathLike, as_labels: bool | None = None) -> Volume:
    """Read a scan (file, DICOM folder or PNG slice folder) as a (z, y, x) array with geometry.

    Raises VolumeReadError with the file and the reason for anything that is not a usable
    2-D or 3-D scan: corrupt, empty, 4-D or more, NaN/Inf voxels, too large.
    """
    path = Path(path)
    img = _read_sitk(path)
    rgb = img.GetNumberOfComponentsPerPixel() > 1
    dim = img.GetDimension()
    if dim > 3:
        raise VolumeReadError(
            f"{path}: image is {dim}-D with size {img.GetSize()}; napari-semiseg works on one "
            f"2-D or 3-D scan. Split the series (e.g. one time point) and open that."
        )
    n = int(np.prod(img.GetSize(), dtype=np.int64))
    if n > MAX_VOXELS:
        raise VolumeReadError(
            f"{path}: {n:,} voxels is more than the {MAX_VOXELS:,} this tool handles; crop or "
            f"downsample it first"
        )
    data = sitk.GetArrayFromImage(img)
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise VolumeReadError(
                f"{path}: {int(bad.sum()):,} voxels are NaN or Inf; fix or mask them before "
                f"segmenting"
            )
    geometry = Geometry(
        spacing=tuple(img.GetSpacing()),
        origin=tuple(img.GetOrigin()),
        direction=tuple(img.GetDirection()),
        source=str(path.resolve()),
    )
    if as_labels is None:
        as_labels = (
            not rgb and np.issubdtype(data.dtype, np.integer) and looks_like_label_path(path)
        )
    if as_labels:
        if not np.issubdtype(data.dtype, np.integer):
            raise VolumeReadError(f"{path}: a label map must hold integers, found {data.dtype}")
        data = data.astype(np.uint8) if data.max(initial=0) <= 255 else data.astype(np.int32)
    return Volume(data=data, geometry=geometry, is_labels=bool(as_labels), rgb=rgb,
                  name=strip_suffix(path))


def check_labels_fit(labels_shape: tuple[int, ...], image_shape: tuple[int, ...],
                     labels_name: str = "labels", image_name: str = "image") -> None:
    """Raise LabelShapeError when a label map cannot lie voxel for voxel on an image."""
    if tuple(labels_shape) != tuple(image_shape):
        raise LabelShapeError(
            f"{labels_name} has shape {tuple(labels_shape)} (z, y, x) but {image_name} has "
            f"{tuple(image_shape)}: it was made for another scan"
        )


def to_sitk(data: np.ndarray, geometry: Geometry | None) -> sitk.Image:
    """Array (z, y, x) plus geometry as a SimpleITK image."""
    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.int64:
        arr = arr.astype(np.int32)
    img = sitk.GetImageFromArray(arr)
    if geometry is not None:
        if geometry.ndim != img.GetDimension():
            raise LabelShapeError(
                f"array is {img.GetDimension()}-D but its scan geometry is {geometry.ndim}-D"
            )
        img.SetSpacing([float(s) for s in geometry.spacing])
        img.SetOrigin([float(o) for o in geometry.origin])
        img.SetDirection([float(d) for d in geometry.direction])
    return img


def write_volume(path: str | os.PathLike, data: np.ndarray, geometry: Geometry | None) -> str:
    """Write an array with its scan's geometry; the file is complete or not there at all."""
    path = Path(path)
    if not has_suffix(path, WRITE_SUFFIXES):
        raise ValueError(f"{path}: save as one of {', '.join(WRITE_SUFFIXES)}")
    img = to_sitk(data, geometry)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next(s for s in WRITE_SUFFIXES if str(path).lower().endswith(s))
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    sitk.WriteImage(img, str(tmp), useCompression=True)
    os.replace(tmp, path)
    return str(path)

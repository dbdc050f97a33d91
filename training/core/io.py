"""The one reader and writer of scans and label maps, with geometry and every check.

The engine, the command line, the plugin and saved sessions all read and write through this
module, so a file that one of them refuses, all of them refuse. SimpleITK does the format work;
what it does silently wrong is caught here:

- it pads a truncated NIfTI with zeros and turns NaN voxels into 0: the raw NIfTI stream is
  checked for length and, for float data, for NaN/Inf (:func:`_check_nifti_raw`);
- its MetaIO reader trusts ``CompressedDataSize`` and skips the zlib checksum: compressed
  ``.mha`` / ``.mhd`` data is verified first (:mod:`training.core.metaimage`);
- its writer only prints "wrote only 0 of N bytes" on a full disk: every write goes to a
  temporary sibling that is read back and compared before it is renamed (:func:`write_volume`).

Arrays are (z, y, x); SimpleITK's spacing, origin and direction are (x, y, z).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".jpg")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SLICE_SUFFIXES = (".png",)
WRITE_SUFFIXES = (".nii.gz", ".nrrd", ".mha")
# labels written as a DICOM-SEG onto their DICOM series (training.core.dicom_seg)
SEG_SUFFIX = ".dcm"
DICOM_SERIES_KEY = "semiseg|dicom_series"  # image metadata: the Series Instance UID read
NOT_ANNOTATED = 255  # GUIDE §3: unannotated is not background
MAX_VOXELS = 1024**3  # beyond this a CPU loop is hopeless; refuse before allocating
RGB_CHANNEL = 1  # LGG PNGs are (pre-contrast, FLAIR, post-contrast); for photos, green ~ luma

# NIfTI datatype codes with their NumPy types (RGB and complex are left to SimpleITK)
_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
                1024: "i8", 1280: "u8"}


class DataError(ValueError):
    """A problem with input files or arrays, reported to the user in one line."""


class VolumeReadError(DataError):
    """A file that cannot be read as a usable scan, with the file and the reason named."""


class LabelShapeError(DataError):
    """A label map that does not fit the scan it is meant for, or holds invalid values."""


class WriteError(OSError):
    """A file that could not be written completely; the previous file at that path is intact."""


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

    @classmethod
    def of(cls, img: sitk.Image, source: str = "") -> Geometry:
        return cls(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()),
                   source)


@dataclass
class Volume:
    """A scan or label map as read: (z, y, x[, channel]) array plus geometry."""

    data: np.ndarray
    geometry: Geometry
    is_labels: bool = False
    rgb: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)


# ----- names ----------------------------------------------------------------------------------


def has_suffix(path: str | os.PathLike, suffixes=VOLUME_SUFFIXES + SLICE_SUFFIXES) -> bool:
    return str(path).lower().endswith(tuple(suffixes))


def case_name(path: str | os.PathLike) -> str:
    """File name without its (possibly double) image suffix."""
    name = Path(path).name
    for suf in IMAGE_SUFFIXES + (".dcm",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem if "." in name else name


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def png_slices(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if has_suffix(p, SLICE_SUFFIXES)), key=_natural_key)


def dicom_series_files(folder: Path, series: str | None = None) -> list[str]:
    """The files of the DICOM image series ``series`` chooses in a folder (by number,
    description or UID; none needed when there is one), in slice order; [] when there is none.

    Several series without a choice, or slices missing or unevenly spaced, raise
    :class:`VolumeReadError` naming the series or the file (:mod:`training.core.dicom`).
    """
    from training.core.dicom import DicomError, check_stack, choose_series, list_series

    try:
        found = list_series(folder)
        if not found:
            return []
        chosen = choose_series(folder, found, series)
        check_stack(chosen)
        return chosen.files
    except DicomError as e:
        raise VolumeReadError(str(e)) from e


# ----- reading --------------------------------------------------------------------------------


def _reason(e: Exception, path: Path) -> str:
    """SimpleITK's useful sentence (its last line), minus errno text that misleads.

    A truncated .mha is reported by SimpleITK as "No such file or directory" although the file
    is there; say what is known instead.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    if "no such file" in last.lower() and path.exists():
        return "its data ends early or cannot be decoded"
    return last


def _read_sitk(path: Path, series: str | None = None) -> sitk.Image:
    if path.is_dir():
        pngs = png_slices(path)
        if pngs:
            return _read_png_stack(path, pngs)
        files = dicom_series_files(path, series)
        if not files:
            raise VolumeReadError(f"{path}: folder holds no DICOM series and no PNG slices")
        try:
            img = sitk.ReadImage(files)
        except RuntimeError as e:
            raise VolumeReadError(f"{path}: DICOM series is unreadable ({_reason(e, path)})") from e
        from training.core.dicom import file_series

        img.SetMetaData(DICOM_SERIES_KEY, file_series(files[0]))  # which series was read
        return img
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: file is empty")
    checksum = None
    if has_suffix(path, (".nii", ".nii.gz")):
        checksum = _check_nifti_raw(path)
    elif has_suffix(path, (".mha", ".mhd")):
        from training.core.metaimage import check_metaimage  # it imports this module's errors

        check_metaimage(path)
    elif has_suffix(path, (".nrrd",)):
        _check_nrrd_compressed(path)
    try:
        if checksum is None:
            return sitk.ReadImage(str(path))
        img = _read_nifti_alone(path)
        _check_sum(img, checksum, path)
        return img
    except RuntimeError as e:
        if has_suffix(path, SLICE_SUFFIXES) and "PixelType" in str(e):
            return _png_without_alpha([path])
        raise VolumeReadError(
            f"{path}: not a readable image, it may be truncated or corrupt ({_reason(e, path)})"
        ) from e


def _png_without_alpha(pngs: list[Path]) -> sitk.Image:
    """Grey+alpha PNGs, which SimpleITK cannot read ("Unknown PixelType"): keep the grey."""
    import imageio.v3 as iio  # comes with scikit-image

    slices = []
    for p in pngs:
        try:
            a = np.asarray(iio.imread(p))
        except Exception as e:  # noqa: BLE001 - imageio raises many types for bad files
            raise VolumeReadError(f"{p}: not a readable PNG ({e})") from e
        slices.append(a[..., 0] if a.ndim == 3 and a.shape[-1] == 2 else a)
    if len(slices) == 1:
        return sitk.GetImageFromArray(slices[0], isVector=slices[0].ndim == 3)
    return sitk.GetImageFromArray(np.stack(slices), isVector=slices[0].ndim == 3)


def _read_nifti_alone(path: Path) -> sitk.Image:
    """Read a NIfTI file through a private link: with ``scan.nii`` beside ``scan.nii.gz``,
    SimpleITK reads the header of one and the voxels of the other (found by fuzzing)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="semiseg-read-") as tmp:
        link = Path(tmp) / ("scan.nii.gz" if has_suffix(path, (".gz",)) else "scan.nii")
        try:
            os.symlink(path.resolve(), link)
        except OSError:  # no symlinks here (some Windows setups): read in place
            return sitk.ReadImage(str(path))
        return sitk.ReadImage(str(link))


def _check_sum(img: sitk.Image, expected: float, path: Path) -> None:
    """What SimpleITK returned must sum to what the file's bytes hold."""
    got = float(sitk.GetArrayViewFromImage(img).sum(dtype=np.float64))
    if not np.isclose(got, expected, rtol=1e-5, atol=1e-3 * max(1.0, abs(expected)) ** 0.5):
        raise VolumeReadError(f"{path}: the voxels read back differ from the file's data "
                              f"(sum {got:.6g} vs {expected:.6g}); the file may be corrupt")


@dataclass
class _NiftiHeader:
    endian: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int
    slope: float
    inter: float


def _nifti_header(head: bytes, path: Path) -> _NiftiHeader:
    """The fields of a NIfTI-1 or NIfTI-2 header that say how much data follows, and how."""
    if len(head) < 348:
        raise VolumeReadError(f"{path}: file is truncated ({len(head)} bytes, no full header)")
    for e in "<>":
        sizeof_hdr = struct.unpack(e + "i", head[:4])[0]
        if sizeof_hdr == 348:
            datatype, bitpix = struct.unpack(e + "hh", head[70:74])
            offset, slope, inter = struct.unpack(e + "3f", head[108:120])
            return _NiftiHeader(e, struct.unpack(e + "8h", head[40:56]), datatype, bitpix,
                                max(int(offset), 352), slope, inter)
        if sizeof_hdr == 540 and len(head) >= 540:
            datatype, bitpix = struct.unpack(e + "hh", head[12:16])
            offset = struct.unpack(e + "q", head[168:176])[0]
            slope, inter = struct.unpack(e + "2d", head[176:192])
            return _NiftiHeader(e, struct.unpack(e + "8q", head[16:80]), datatype, bitpix,
                                max(int(offset), 544), slope, inter)
    raise VolumeReadError(f"{path}: not a NIfTI file (bad header size)")


def _check_nifti_raw(path: Path) -> float | None:
    """Check the raw NIfTI stream: complete, and free of NaN/Inf in float data.

    SimpleITK alone pads a truncated file with zeros and reads NaN voxels as 0, so both are
    checked here on the bytes themselves, streamed so that a large scan is never held twice.
    Returns the sum of the (scaled) voxel values, to check what SimpleITK then returns.
    """
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            h = _nifti_header(head, path)
            ndim = max(1, min(int(h.dims[0]), 7))
            voxels = 1
            for d in h.dims[1 : ndim + 1]:
                voxels *= max(int(d), 1)
            nbytes = voxels * max(int(h.bitpix), 8) // 8
            code = _NIFTI_TYPES.get(int(h.datatype))
            dtype = np.dtype(h.endian + code) if code else None
            if dtype is not None and dtype.itemsize * 8 != h.bitpix:
                raise VolumeReadError(f"{path}: NIfTI header is inconsistent (datatype "
                                      f"{h.datatype} with {h.bitpix} bits per voxel)")
            total, bad, value_sum, seen = len(head), 0, 0.0, 0
            pending = head[h.offset:] if len(head) > h.offset else b""
            skip = max(0, h.offset - len(head))  # header extensions beyond the first read

            def consume(buf: bytes) -> bytes:
                nonlocal bad, value_sum, seen
                want = nbytes - seen
                n = min(len(buf) // dtype.itemsize * dtype.itemsize, max(want, 0))
                values = np.frombuffer(buf[:n], dtype=dtype)
                if dtype.kind == "f":
                    finite = np.isfinite(values)
                    bad += int(values.size - np.count_nonzero(finite))
                    value_sum += float(values[finite].sum(dtype=np.float64))
                else:
                    value_sum += float(values.sum(dtype=np.float64))
                seen += n
                return buf[n:] if n < want else b""

            while chunk := f.read(1 << 20):  # stream: never hold a whole decompressed scan
                total += len(chunk)
                if dtype is None:
                    continue
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                pending = consume(pending + chunk)
            if dtype is not None and pending:
                consume(pending)
    except (OSError, EOFError, zlib.error) as e:
        raise VolumeReadError(f"{path}: compressed data is truncated or corrupt ({e})") from e
    if total < h.offset + nbytes:
        raise VolumeReadError(
            f"{path}: file is truncated: {total:,} bytes of data where the header promises "
            f"{h.offset + nbytes:,}"
        )
    if bad:
        raise VolumeReadError(
            f"{path}: {bad:,} voxels are NaN or Inf; fix or mask them before segmenting"
        )
    if dtype is None:
        return None
    if np.isfinite(h.slope) and h.slope != 0 and (h.slope != 1 or h.inter != 0):
        return h.slope * value_sum + h.inter * voxels
    return value_sum


def _inflate_all(path: Path, start: int, wbits: int) -> None:
    """Decompress ``path`` from byte ``start`` to its end, checking length and checksum."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            stream = zlib.decompressobj(wbits=wbits)
            while chunk := f.read(1 << 20):
                stream.decompress(chunk)
            stream.flush()
            if not stream.eof:
                raise zlib.error("the compressed stream ends early")
    except zlib.error as e:
        raise VolumeReadError(f"{path}: compressed data is truncated or corrupt ({e})") from e


def _check_nrrd_compressed(path: Path) -> None:
    """A gzip-encoded NRRD: SimpleITK does not check the gzip CRC, so flipped bytes would be
    read as other voxel values. Decompress it here once, checking length and CRC."""
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"\n\n")
    if end < 0 or not head.startswith(b"NRRD"):
        return  # not an attached-data NRRD header; SimpleITK will say what is wrong
    header = head[:end].decode("latin-1").lower()
    if not re.search(r"^encoding:\s*(gzip|gz)\s*$", header, re.M) or "data file:" in header:
        return
    _inflate_all(path, end + 2, wbits=47)  # gzip or zlib, with their checksums


def _read_png_stack(folder: Path, pngs: list[Path]) -> sitk.Image:
    sizes: dict = {}
    for p in pngs:
        r = sitk.ImageFileReader()
        r.SetFileName(str(p))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise VolumeReadError(f"{p}: not a readable PNG ({_reason(e, p)})") from e
        sizes.setdefault((r.GetSize(), r.GetNumberOfComponents()), []).append(p.name)
    if len(sizes) > 1:
        desc = "; ".join(f"{k[0]} x{k[1]}: {len(v)} files (e.g. {v[0]})" for k, v in sizes.items())
        raise VolumeReadError(f"{folder}: PNG slices differ in size, cannot stack them ({desc})")
    try:
        return sitk.ReadImage([str(p) for p in pngs])
    except RuntimeError as e:
        if "PixelType" in str(e):
            return _png_without_alpha(pngs)
        raise VolumeReadError(f"{folder}: PNG stack is unreadable ({_reason(e, folder)})") from e


class TimeSeriesError(VolumeReadError):
    """A 4-D scan (a cine MRI, a perfusion series) read without saying which time point."""

    def __init__(self, message: str, time_points: int):
        super().__init__(message)
        self.time_points = time_points


def read_volume(path: str | os.PathLike, as_labels: bool = False, series: str | None = None,
                like: tuple[tuple[int, ...], Geometry] | None = None,
                time_point: int | None = None) -> Volume:
    """Read a scan (file, DICOM folder or PNG slice folder) as a (z, y, x) array with geometry.

    Raises :class:`VolumeReadError` with the file and the reason for anything that is not a
    usable 2-D or 3-D scan: missing, empty, truncated or corrupt, 4-D or more, NaN/Inf voxels,
    too large. With ``as_labels`` the values are checked as a label map (:func:`label_values`).
    RGB(A) images keep their channels in a last axis (``rgb``); grey+alpha keeps the grey.
    ``series`` chooses one DICOM series of a folder holding several (``extra["dicom_series"]``
    says which was read). A DICOM-SEG file is a label map: read onto ``like`` (the shape and
    geometry of its scan) when given, else on its own frames (:mod:`training.core.dicom_seg`).
    ``time_point`` (from 1) reads that time point of a 4-D scan as a 3-D one; it is not a file
    of its own, so its geometry names no source, and its name says which time point it is.
    A 4-D scan read without one raises :class:`TimeSeriesError`.
    """
    path = Path(path)
    if _is_seg(path):
        return _read_seg_volume(path, as_labels, like)
    img = _read_sitk(path, series)
    dim = img.GetDimension()
    if dim == 4 and img.GetNumberOfComponentsPerPixel() == 1:
        n = img.GetSize()[3]
        if time_point is None:
            raise TimeSeriesError(
                f"{path}: a time series of {n} time points (size {img.GetSize()}); "
                f"napari-semiseg segments one 3-D scan at a time: open one time point "
                f"(napari asks which; semiseg predict takes --time-point N)", n)
        img = _time_point(img, time_point, path)
    elif time_point is not None:
        raise VolumeReadError(f"{path}: time point {time_point} asked for, but the scan is "
                              f"{dim}-D, not a time series")
    dim = img.GetDimension()
    if dim > 3:
        raise VolumeReadError(
            f"{path}: image is {dim}-D with size {img.GetSize()}; napari-semiseg works on one "
            f"2-D or 3-D scan. Split the series (e.g. one time point) and open that."
        )
    n = int(np.prod(img.GetSize(), dtype=np.int64)) * img.GetNumberOfComponentsPerPixel()
    if n > MAX_VOXELS:
        raise VolumeReadError(
            f"{path}: {n:,} voxels is more than the {MAX_VOXELS:,} this tool handles; crop or "
            f"downsample it first"
        )
    try:
        data = sitk.GetArrayFromImage(img)
    except RuntimeError as e:
        raise VolumeReadError(f"{path}: pixel data cannot be decoded ({_reason(e, path)})") from e
    channels = img.GetNumberOfComponentsPerPixel()
    if channels == 2:  # grey + alpha (PNG): the alpha channel is not image content
        data, channels = data[..., 0], 1
    elif channels > 4:
        raise VolumeReadError(f"{path}: {channels} values per voxel; expected grey or RGB(A)")
    rgb = channels > 1
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise VolumeReadError(
                f"{path}: {int(bad.sum()):,} voxels are NaN or Inf; fix or mask them before "
                f"segmenting"
            )
    geometry = Geometry.of(img, "" if time_point is not None else str(path.resolve()))
    if as_labels:
        if rgb:
            raise LabelShapeError(f"{path}: a label map must have one value per voxel, "
                                  f"found {channels} channels")
        data = label_values(data, str(path), png_binary=is_png(path))
    extra = ({"dicom_series": img.GetMetaData(DICOM_SERIES_KEY)}
             if img.HasMetaDataKey(DICOM_SERIES_KEY) else {})
    name = case_name(path) + (f" t={time_point}" if time_point is not None else "")
    return Volume(data=data, geometry=geometry, is_labels=bool(as_labels), rgb=rgb,
                  name=name, extra=extra)


def one_value_note(data: np.ndarray) -> str | None:
    """What to tell the user about a scan of one value everywhere (a failed export often leaves
    zeros: it shows black and predicts nothing); None for any other scan."""
    data = np.asarray(data)
    if data.size and data.min() == data.max():
        return (f"every voxel holds the same value ({data.flat[0]}): there is nothing to "
                f"segment. Is it the right file?")
    return None


def _time_point(img: sitk.Image, time_point: int, path: Path) -> sitk.Image:
    """Time point ``time_point`` (from 1) of a 4-D image, as a 3-D image with its geometry."""
    n = img.GetSize()[3]
    if not 1 <= time_point <= n:
        raise VolumeReadError(f"{path}: time point {time_point} asked for; the series has "
                              f"time points 1 to {n}")
    size = [*img.GetSize()[:3], 0]
    try:
        return sitk.Extract(img, size, [0, 0, 0, time_point - 1],
                            sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    except RuntimeError as e:  # a direction that mixes space and time
        raise VolumeReadError(f"{path}: time point {time_point} cannot be taken out as a 3-D "
                              f"scan ({_reason(e, path)})") from e


def _is_seg(path: Path) -> bool:
    """A DICOM-SEG file (only files without a known image suffix are looked into)."""
    if not path.is_file() or has_suffix(path, IMAGE_SUFFIXES):
        return False
    from training.core.dicom import is_seg_file

    return is_seg_file(path)


def _read_seg_volume(path: Path, as_labels: bool,
                     like: tuple[tuple[int, ...], Geometry] | None) -> Volume:
    from training.core.dicom_seg import read_seg

    if not as_labels:
        raise VolumeReadError(f"{path}: is a DICOM-SEG (a segmentation), not a scan; open its "
                              f"series and read it as labels onto that")
    shape, geometry = like if like is not None else (None, None)
    seg = read_seg(path, shape, geometry)
    return Volume(data=seg.data, geometry=seg.geometry, is_labels=True, name=case_name(path),
                  extra={"segments": seg.segments, "names": seg.names(),
                         "referenced_series": seg.referenced_series})


def label_values(data: np.ndarray, source: str = "label map",
                 png_binary: bool = False) -> np.ndarray:
    """A label map as uint8: integers 0..254 plus 255 (not annotated), anything else refused.

    Float maps whose values are all whole numbers (some tools save masks as float) are accepted.
    ``png_binary``: a 0/255 mask (how PNG masks store "structure") becomes 0/1. A mask that is
    all 255 stays 255: "not annotated", as in every other format.
    """
    data = np.asarray(data)
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        whole = finite & (data == np.round(np.where(finite, data, 0)))
        if not whole.all():
            idx = tuple(int(i) for i in np.argwhere(~whole)[0])
            raise LabelShapeError(f"{source}: a label map must hold whole numbers; found "
                                  f"{data[idx]!r} at voxel {idx}")
    elif not np.issubdtype(data.dtype, np.integer):
        raise LabelShapeError(f"{source}: a label map must hold integers, found {data.dtype}")
    if data.size:
        lo, hi = data.min(), data.max()
        if lo < 0 or hi > NOT_ANNOTATED:
            value = lo if lo < 0 else hi
            idx = tuple(int(i) for i in np.argwhere(data == value)[0])
            raise LabelShapeError(
                f"{source}: label value {value:g} at voxel {idx} is outside 0..254 "
                f"(and 255 = not annotated)"
            )
    out = data.astype(np.uint8)
    if png_binary and out.size and set(np.unique(out)) == {0, 255}:
        out = (out > 0).astype(np.uint8)
    return out


def is_png(path: str | os.PathLike) -> bool:
    """A PNG file or a folder of PNG slices (whose masks store "structure" as 255)."""
    path = Path(path)
    return has_suffix(path, SLICE_SUFFIXES) or (path.is_dir() and bool(png_slices(path)))


def rgb_to_grey(array: np.ndarray) -> np.ndarray:
    """The one grey channel networks see for an RGB(A) image (..., 3|4): the FLAIR channel.

    The LGG masks outline FLAIR abnormality and the tumour contrast is ~3x larger in FLAIR than
    in the channel mean, so every loader (CLI, plugin) keeps channel 1 and drops the rest.
    """
    array = np.asarray(array)
    if array.shape[-1] not in (3, 4):
        raise DataError(f"expected an RGB(A) array (..., 3 or 4), got shape {array.shape}")
    return array[..., RGB_CHANNEL]


def rgb_channels(array: np.ndarray) -> np.ndarray:
    """An RGB(A) image or stack as a model that reads its channels takes it: (z, y, x, 3), the
    alpha of RGBA dropped (not an image channel), one slice given its slice axis."""
    array = np.asarray(array)
    if array.shape[-1] not in (3, 4):
        raise DataError(f"expected an RGB(A) array (..., 3 or 4), got shape {array.shape}")
    array = array[..., :3]
    return array[None] if array.ndim == 3 else array


def read_image(path: str | os.PathLike, series: str | None = None,
               channels: int = 1, time_point: int | None = None) -> tuple[np.ndarray, Geometry]:
    """A scan as the networks see it: grey (z, y, x) array (2-D -> one slice) and geometry.
    ``series`` chooses one DICOM series of a folder holding several. ``channels`` > 1 is for a
    model that reads every channel of an RGB scan: (z, y, x, channels), refused for a scan
    with other channels. ``time_point``: that time point of a 4-D scan (:func:`read_volume`)."""
    vol = read_volume(path, series=series, time_point=time_point)
    if channels > 1:
        have = min(int(vol.data.shape[-1]), 3) if vol.rgb else 1
        if have != channels:
            raise DataError(f"{Path(path).name}: the model reads {channels} channels, the scan "
                            f"has {have}")
        return rgb_channels(vol.data), vol.geometry
    arr = rgb_to_grey(vol.data) if vol.rgb else vol.data
    return (arr[None] if arr.ndim == 2 else arr), vol.geometry


def read_labels(path: str | os.PathLike, like: tuple[tuple[int, ...], Geometry] | None = None
                ) -> tuple[np.ndarray, Geometry]:
    """A label map (z, y, x) uint8 with values checked (:func:`label_values`), and geometry.
    ``like``: the shape and geometry of its scan, onto which a DICOM-SEG is placed."""
    vol = read_volume(path, as_labels=True, like=like)
    arr = vol.data
    return (arr[None] if arr.ndim == 2 else arr), vol.geometry


def check_labels_fit(labels_shape: tuple[int, ...], image_shape: tuple[int, ...],
                     labels_name: str = "labels", image_name: str = "image") -> None:
    """Raise LabelShapeError when a label map cannot lie voxel for voxel on an image."""
    if tuple(labels_shape) != tuple(image_shape):
        raise LabelShapeError(
            f"{labels_name} has shape {tuple(labels_shape)} (z, y, x) but {image_name} has "
            f"{tuple(image_shape)}: it was made for another scan"
        )


# ----- writing --------------------------------------------------------------------------------


def to_sitk(data: np.ndarray, geometry: Geometry | None) -> sitk.Image:
    """Array (z, y, x) plus geometry as a SimpleITK image."""
    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.int64:
        arr = arr.astype(np.int32)
    if geometry is not None and geometry.ndim == 2 and arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]  # a single slice written back onto a 2-D scan
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


def write_volume(path: str | os.PathLike, data: np.ndarray, geometry: Geometry | None,
                 segments: list | None = None) -> str:
    """Write an array with its scan's geometry; the file is complete or not there at all.

    A ``.dcm`` path writes labels as a DICOM-SEG onto the DICOM series ``geometry.source``
    (:func:`training.core.dicom_seg.write_seg`), with ``segments`` naming and colouring them.

    It is written to a temporary sibling, synced, read back and compared voxel for voxel, and only
    then renamed over ``path``. Any failure (a full disk, which SimpleITK does not report) raises
    :class:`WriteError` and leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    if has_suffix(path, (SEG_SUFFIX,)):
        from training.core.dicom_seg import write_seg

        if geometry is None:
            raise DataError(f"{path}: a DICOM-SEG is written onto the DICOM series of its scan; "
                            f"this array has no scan")
        return write_seg(path, data, geometry, segments)
    if has_suffix(path, SLICE_SUFFIXES):  # a prediction for a PNG slice stays a PNG slice
        arr = np.asarray(data)
        if arr.ndim == 3 and arr.shape[0] == 1:
            data = arr[0]
        if np.ndim(data) != 2 or np.asarray(data).dtype not in (np.uint8, np.uint16):
            raise DataError(f"{path}: a PNG holds one 8- or 16-bit slice; save this "
                            f"{np.asarray(data).dtype} array of shape {arr.shape} as .nii.gz")
        geometry = None  # PNG stores no spacing or origin
    elif not has_suffix(path, WRITE_SUFFIXES):
        raise DataError(f"{path}: save as one of {', '.join(WRITE_SUFFIXES)}")
    img = to_sitk(data, geometry)
    suffix = next(s for s in (*WRITE_SUFFIXES, *SLICE_SUFFIXES) if str(path).lower().endswith(s))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(tmp), useCompression=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        back = sitk.GetArrayFromImage(_read_back(tmp))
        if back.shape != np.shape(sitk.GetArrayViewFromImage(img)) or not np.array_equal(
                back, sitk.GetArrayViewFromImage(img), equal_nan=True):
            raise WriteError(f"{path}: the written file does not read back the same")
        os.replace(tmp, path)
    except (OSError, RuntimeError, DataError) as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, WriteError):
            raise
        raise WriteError(f"cannot write {path}: {_write_reason(e, path)}; the previous file "
                         f"(if any) is kept") from e
    return str(path)


def _read_back(tmp: Path) -> sitk.Image:
    """Read a file just written, checking that it is complete.

    Autosave writes NIfTI on every stroke, so that path is kept cheap: the gzip trailer's
    length field (or the plain file's size) must match the header, which catches the empty or
    cut files of a full disk; the voxels are then compared by the caller. Other formats go
    through the full reader.
    """
    size = tmp.stat().st_size
    if size == 0:
        raise VolumeReadError(f"{tmp}: file is empty")
    if not has_suffix(tmp, (".nii", ".nii.gz")):
        return _read_sitk(tmp)
    with open(tmp, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gz else open)(tmp, "rb") as f:
        head = f.read(540)
    h = _nifti_header(head, tmp)
    ndim = max(1, min(int(h.dims[0]), 7))
    voxels = int(np.prod([max(int(d), 1) for d in h.dims[1 : ndim + 1]], dtype=np.int64))
    expected = h.offset + voxels * max(int(h.bitpix), 8) // 8
    if gz:
        with open(tmp, "rb") as f:
            f.seek(-4, os.SEEK_END)
            stored = struct.unpack("<I", f.read(4))[0]
        if stored != expected % (1 << 32):
            raise VolumeReadError(f"{tmp}: compressed file is incomplete")
    elif size < expected:
        raise VolumeReadError(f"{tmp}: file is truncated")
    return sitk.ReadImage(str(tmp))


def _write_reason(e: Exception, path: Path) -> str:
    try:
        free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
    except OSError:
        free = None
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    if free is not None and free < (1 << 20):
        return f"the disk is full ({free:,} bytes free)"
    if isinstance(e, VolumeReadError):
        return "the written file is incomplete (is the disk full?)"
    return text


def write_like(array: np.ndarray, geometry: Geometry, path: str | os.PathLike,
               segments: list | None = None) -> str:
    """Write ``array`` (z, y, x) with ``geometry`` (the source scan's), verified and atomic."""
    return write_volume(path, array, geometry, segments)

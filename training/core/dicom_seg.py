"""DICOM Segmentation objects (DICOM-SEG) written onto, and read back onto, a DICOM series.

A SEG is how a mask goes back to PACS (3D Slicer, OHIF and MONAI Label read it). It is made
with highdicom, an optional extra (``pip install "napari-semiseg[dicom]"``); without it every
entry point says so instead of failing on an import.

- Label value k is segment k, named and coloured as the user's structures; 255 ("not
  annotated") is never a segment: those voxels belong to no segment.
- Every slice gets a frame (empty ones too), so the SEG alone tells the scan's extent.
- Reading places the frames on the scan's grid by their positions (highdicom's
  ``match_geometry``): a SEG of another series, or whose frames fall between the scan's
  voxels, is refused with the file named, never resampled.
- Writing is atomic and verified: a temporary sibling is read back with highdicom and compared
  voxel for voxel before it replaces the target.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from training.core.dicom import SeriesInfo, first_position, frame_of_reference, list_series
from training.core.io import NOT_ANNOTATED, DataError, Geometry, WriteError
from training.core.palette import class_color

if TYPE_CHECKING:
    from highdicom import VolumeGeometry

INSTALL_HINT = 'pip install "napari-semiseg[dicom]" (or: pip install highdicom)'
CONTENT_LABEL = "SEMISEG"
POSITION_TOL = 1e-3  # in voxels and direction cosines: DICOM stores decimal strings


@dataclass
class Segment:
    """One structure: its label value (= segment number), name and colour (#rrggbb)."""

    value: int
    name: str
    color: str = ""


@dataclass
class SegLabels:
    """A SEG read onto a grid: (z, y, x) uint8 labels, where it lies, and its segments."""

    data: np.ndarray
    geometry: Geometry
    segments: list[Segment]
    referenced_series: list[str]
    description: str = ""

    def names(self) -> list[str]:
        """Names by label value, background first (what the plugin's Structures list holds)."""
        top = max([s.value for s in self.segments], default=0)
        names = ["background"] + [f"structure {k}" for k in range(1, top + 1)]
        for s in self.segments:
            names[s.value] = s.name
        return names


def highdicom() -> ModuleType:
    """The highdicom module, or an error that says how to install it."""
    try:
        import highdicom as hd
    except ImportError as e:
        raise DataError(f"DICOM-SEG needs the highdicom package, which is not installed: "
                        f"{INSTALL_HINT}") from e
    return hd


def segments_for(labels: np.ndarray, names: Sequence[str] | None = None,
                 colors: dict[int, str] | None = None) -> list[Segment]:
    """Segments 1..N for a label map: every named structure and every value present
    (unnamed ones become "structure k"); 255 is never one."""
    values = np.unique(labels)
    top = max(int(values[values != NOT_ANNOTATED].max(initial=0)), len(names or ()) - 1)
    out = []
    for k in range(1, top + 1):
        name = names[k] if names and k < len(names) and str(names[k]).strip() else f"structure {k}"
        out.append(Segment(k, str(name), (colors or {}).get(k) or class_color(k)))
    return out


# ----- geometry --------------------------------------------------------------------------------


def _lift(geometry: Geometry) -> Geometry:
    """A 2-D geometry as a one-slice 3-D one (a SEG frame always lies in 3-D space)."""
    if geometry.ndim == 3:
        return geometry
    d = np.eye(3)
    d[:2, :2] = np.reshape(geometry.direction, (2, 2))
    return Geometry((*geometry.spacing, 1.0), (*geometry.origin, 0.0),
                    tuple(d.ravel().tolist()), geometry.source)


def volume_geometry(shape: Sequence[int], geometry: Geometry) -> VolumeGeometry:
    """highdicom's geometry of a (z, y, x) array lying at ``geometry`` (SimpleITK's x, y, z)."""
    hd = highdicom()
    g = _lift(geometry)
    direction = np.reshape(g.direction, (3, 3))[:, ::-1]  # columns for the z, y, x axes
    return hd.VolumeGeometry.from_components(
        tuple(int(s) for s in shape), spacing=tuple(g.spacing[::-1]),
        coordinate_system="PATIENT", position=tuple(g.origin), direction=direction)


def _geometry_of(volume: VolumeGeometry, source: str) -> Geometry:
    """Our geometry (x, y, z order) of a highdicom volume whose axes are (slice, row, col)."""
    direction = np.asarray(volume.direction)[:, ::-1] + 0.0  # no -0.0 in what users read
    return Geometry(tuple(float(s) for s in volume.spacing[::-1]),
                    tuple(float(p) for p in volume.position),
                    tuple(float(v) for v in direction.ravel()), source)


def find_series(folder: str | os.PathLike, shape: Sequence[int],
                geometry: Geometry) -> SeriesInfo:
    """The series of ``folder`` that an array of ``shape`` at ``geometry`` was read from."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: the scan's DICOM series folder is not there (DICOM-SEG is "
                        f"written onto the series the scan was opened from)")
    shape3 = (1, *shape) if len(shape) == 2 else tuple(shape)
    fits = [s for s in list_series(folder)
            if (len(s.files), s.rows, s.columns) == tuple(shape3)]
    if len(fits) > 1:  # same size: the first slice's position tells them apart
        origin = np.asarray(_lift(geometry).origin)
        fits = [s for s in fits if np.allclose(first_position(s), origin, atol=1e-3)] or fits
    if not fits:
        raise DataError(f"{folder}: no DICOM series there is {shape3[0]} slices of "
                        f"{shape3[1]}x{shape3[2]}, the size of the labels to save")
    if len(fits) > 1:
        raise DataError(f"{folder}: {len(fits)} DICOM series fit the labels; cannot tell "
                        f"which one they belong to")
    return fits[0]


# ----- writing ---------------------------------------------------------------------------------


def check_writable(shape: Sequence[int], geometry: Geometry) -> SeriesInfo:
    """Refuse, before any work, labels that cannot become a DICOM-SEG: no highdicom, no DICOM
    series of this size at ``geometry.source``, or a series without a frame of reference."""
    highdicom()
    series = find_series(geometry.source, shape, geometry)
    if not frame_of_reference(series):
        raise DataError(f"{series.files[0]}: the series has no Frame of Reference UID, which a "
                        f"DICOM-SEG needs to lie on it")
    return series


def write_seg(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry,
              segments: Sequence[Segment] | None = None, algorithm: str = "AUTOMATIC",
              description: str = "") -> str:
    """Write ``labels`` (z, y, x) as a DICOM-SEG referencing the series they were made on.

    ``geometry.source`` is the series folder (as :func:`training.core.io.read_volume` records it).
    255 is written as "no segment". The file is complete or not there at all.
    """
    hd = highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    path = Path(path)
    arr = np.asarray(labels)
    arr = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr
    if arr.ndim == 2:
        arr = arr[None]
    if arr.size and (arr.min() < 0 or arr.max() > NOT_ANNOTATED
                     or not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{path}: a DICOM-SEG holds label values 0..254; these labels are "
                        f"{arr.dtype} from {arr.min()} to {arr.max()}")
    series = check_writable(arr.shape, geometry)
    segs = list(segments) if segments is not None else segments_for(arr)
    if [s.value for s in segs] != list(range(1, len(segs) + 1)):
        raise DataError(f"{path}: segments must be numbered 1..N, got {[s.value for s in segs]}")
    data = np.where(arr == NOT_ANNOTATED, 0, arr).astype(np.uint8)
    if data.max(initial=0) > len(segs):
        raise DataError(f"{path}: label {int(data.max())} has no segment description")
    if not segs:
        raise DataError(f"{path}: nothing to save: the labels hold no structure and none is "
                        f"named")
    try:
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for bad files
        raise DataError(f"{geometry.source}: cannot read the series' headers ({e})") from e
    algo = hd.AlgorithmIdentificationSequence(
        name="napari-semiseg", version=_version(), family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=s.value, segment_label=s.name[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=algorithm, algorithm_identification=algo,
        display_color=hd.color.CIELabColor.from_rgb(*_rgb(s.color or class_color(s.value))),
    ) for s in segs]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=data, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=100,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-semiseg",
            manufacturer_model_name="napari-semiseg", software_versions=_version(),
            device_serial_number="0", omit_empty_frames=False, content_label=CONTENT_LABEL,
            series_description=(description or _series_description(series))[:64])
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise DataError(f"{path}: cannot build a DICOM-SEG on series {series.uid} ({e})") from e
    # highdicom copies Spacing Between Slices from the source headers, where some writers
    # (GDCM among them) put a wrong value; readers stack the frames by it, so state the truth
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.SpacingBetweenSlices = f"{_lift(geometry).spacing[2]:.10g}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.dcm")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        seg.save_as(str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        back = read_seg(tmp, data.shape, geometry, series_uid=series.uid)
        if not np.array_equal(back.data, data):
            raise WriteError(f"{path}: the written DICOM-SEG does not read back the same")
        os.replace(tmp, path)
    except (OSError, DataError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        raise WriteError(f"cannot write {path}: {e}; the previous file (if any) is "
                         f"kept") from e
    return str(path)


def _series_description(series: SeriesInfo) -> str:
    return f"{series.description} segmentation" if series.description else "Segmentation"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-semiseg")
    except Exception:  # noqa: BLE001 - not installed as a package (a source checkout)
        return "0.1.0"


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


# ----- reading ---------------------------------------------------------------------------------


def referenced_series(path: str | os.PathLike) -> list[str]:
    """The Series Instance UIDs a SEG was made on (read without its pixel data)."""
    highdicom()
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: not a readable DICOM file ({e})") from e
    return [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])]


def read_seg(path: str | os.PathLike, shape: Sequence[int] | None = None,
             geometry: Geometry | None = None, series_uid: str | None = None) -> SegLabels:
    """A SEG as a (z, y, x) label map: onto ``shape`` at ``geometry`` when given (the scan it
    belongs to), else on its own frames' grid. ``series_uid``: the series it must reference.

    Raises :class:`DataError` naming the file when it is not a SEG, references another series,
    its segments overlap or exceed 254, or its frames do not lie on the scan's voxels.
    """
    hd = highdicom()
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        if geometry is not None:
            # frames are stacked by Spacing Between Slices, which many SEGs copy from source
            # headers where ITK/GDCM writers put 1 mm; onto a known scan its own spacing is
            # the one to try (every frame is still checked to lie on that scan's voxels)
            for item in ds.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence", []):
                item.SpacingBetweenSlices = f"{_lift(geometry).spacing[2]:.10g}"
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as e:  # noqa: BLE001 - pydicom/highdicom raise many types for bad files
        raise DataError(f"{path}: not a readable DICOM-SEG ({e})") from e
    refs = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    if series_uid is not None and refs and series_uid not in refs:
        raise DataError(f"{path}: this DICOM-SEG belongs to series {', '.join(refs)}, not to "
                        f"the scan's series {series_uid}")
    segments = []
    for number in seg.segment_numbers:
        if number >= NOT_ANNOTATED:
            raise DataError(f"{path}: segment {number} cannot be a label value (at most 254; "
                            f"255 means not annotated)")
        desc = seg.get_segment_description(number)
        lab = desc.get("RecommendedDisplayCIELabValue")
        color = ("#{:02x}{:02x}{:02x}".format(
            *hd.color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True)) if lab
                 else class_color(number))
        segments.append(Segment(int(number), str(desc.segment_label), color))
    try:
        volume = seg.get_volume(combine_segments=True)
    except (RuntimeError, ValueError) as e:
        raise DataError(f"{path}: its frames do not form one regular stack, or its segments "
                        f"overlap ({e})") from e
    if shape is not None and geometry is not None:
        target = volume_geometry((1, *shape) if len(shape) == 2 else shape, geometry)
        try:
            placed = volume.match_geometry(target, tol=POSITION_TOL)
        except RuntimeError as e:
            raise DataError(f"{path}: its frames do not match the scan's geometry ({e}); "
                            f"it was made on another grid") from e
        outside = int(np.count_nonzero(volume.array)) - int(np.count_nonzero(placed.array))
        if outside:
            raise DataError(f"{path}: {outside:,} segmented voxels lie outside the scan; it "
                            f"was made on another grid")
        data, geom = placed.array, geometry
        if len(shape) == 2:
            data = data[0]
    else:
        # highdicom may stack the frames top-down; SimpleITK reads a series along the slice
        # normal (row x column direction), so lay the SEG out as its series would be
        d = np.asarray(volume.direction)
        if d[:, 0] @ np.cross(d[:, 2], d[:, 1]) < 0:
            volume = volume.flip_spatial(0)
        data, geom = volume.array, _geometry_of(volume, str(path.resolve()))
    return SegLabels(np.ascontiguousarray(data, dtype=np.uint8), geom, segments, refs,
                     str(seg.get("SeriesDescription", "")))

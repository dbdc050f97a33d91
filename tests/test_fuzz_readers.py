"""Fuzz the one reader through every entry point: a clear error naming the file, or the exact data.

A corpus of each supported format is cut short at many offsets and, where the format carries a
checksum (gzip, zlib), has bytes overwritten inside its compressed payload. Each damaged file goes
through the engine (:func:`training.core.io.read_image`, what ``semiseg train/predict/evaluate``
call), the plugin's napari reader and a new session. A silent wrong read, such as zero-padded
slices or a shorter volume, fails the test.

Byte flips inside *uncompressed* voxel data are not fuzzed: such a file is a valid scan with other
values, and no reader can tell. MetaImage headers are also fuzzed where SimpleITK trusts them: a
``CompressedDataSize``, ``DimSize`` or ``ElementType`` that lies about the data (issue 24).
Label maps go through the label readers: each is refused, read exactly, or opens in the plugin
as an image with a notification saying why.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_semiseg._reader import read_layers
from napari_semiseg.session import Session
from training.core.io import DataError, read_image, read_volume

SHAPE = (5, 12, 14)
SPACING = (0.7, 0.8, 2.5)


def _volume(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(100, 30, SHAPE)).clip(0, 250).astype(dtype)


def _sitk(array: np.ndarray, vector: bool = False) -> sitk.Image:
    img = sitk.GetImageFromArray(array, isVector=vector)
    if img.GetDimension() == 3:
        img.SetSpacing(SPACING)
        img.SetOrigin((1.0, -2.0, 3.0))
    return img


def _corpus(root: Path) -> list[tuple[str, Path, np.ndarray, bool]]:
    """(label, file, expected array, compressed) for each format the reader supports; for a
    ``.mhd`` header the file is its data file (.zraw / .raw), the part that is damaged."""
    root.mkdir()
    out = []
    for name, dtype, compress in [
        ("scan.nii.gz", np.float32, True), ("scan.nii", np.int16, False),
        ("zipped.nrrd", np.float32, True), ("raw.nrrd", np.int16, False),
        ("zipped.mha", np.float32, True), ("raw.mha", np.uint8, False),
        ("zipped.mhd", np.int16, True), ("raw.mhd", np.int16, False),
    ]:
        a = _volume(dtype)
        sitk.WriteImage(_sitk(a), str(root / name), useCompression=compress)
        if name.endswith(".mhd"):
            data = root / (name[:-4] + (".zraw" if compress else ".raw"))
            out.append((name, data, a, compress))
            continue
        out.append((name, root / name, a, compress))
    a = _volume(np.uint8)[0]
    sitk.WriteImage(_sitk(a), str(root / "slice.png"))
    out.append(("slice.png", root / "slice.png", a, True))  # PNG data is zlib with adler32
    rgb = np.stack([a, a // 2, 255 - a], -1)
    sitk.WriteImage(_sitk(rgb, vector=True), str(root / "rgb.png"))
    out.append(("rgb.png", root / "rgb.png", rgb, True))
    return out


def _damaged(path: Path, dst: Path, compressed: bool) -> list[tuple[str, bytes]]:
    raw = path.read_bytes()
    n = len(raw)
    cuts = sorted({1, 4, 16, 100, 200, 347, 348, 352, n // 4, n // 2, 3 * n // 4, n - 16, n - 4,
                   n - 1} & set(range(1, n)))
    cases = [(f"cut at {c} of {n}", raw[:c]) for c in cuts]
    if compressed:
        for at in (n // 3, n // 2, 2 * n // 3, n - 12):
            flipped = bytearray(raw)
            for k in range(at, min(at + 4, n)):
                flipped[k] ^= 0xA5
            cases.append((f"4 bytes flipped at {at}", bytes(flipped)))
    return cases


def _entry_points(path: Path):
    """Every way a file gets in: engine (CLI), plugin reader, session."""
    def plugin(p):
        return np.asarray(read_layers(str(p))[0][0])

    def engine(p):
        arr, _ = read_image(p)
        return arr

    def volume(p):
        return read_volume(p).data

    def session(p):
        return Session.from_file(p, autosave=False).image

    return {"engine": engine, "volume": volume, "plugin": plugin, "session": session}


def _check(label: str, entry: str, fn, path: Path, expected: np.ndarray, grey: np.ndarray):
    try:
        got = fn(path)
    except DataError as e:
        assert path.name in str(e), f"{label} via {entry}: error does not name the file: {e}"
        return "refused"
    want = grey if entry in ("engine", "session") else expected
    got = np.asarray(got)
    if entry in ("engine", "session") and got.shape == (1, *want.shape):
        got = got[0]
    assert got.shape == want.shape and np.array_equal(got, want), (
        f"{label} via {entry}: silently read wrong data")
    return "exact"


def _fresh_copy(tmp_path: Path, name: str, path: Path) -> tuple[Path, Path]:
    """A work folder holding ``name`` (and, for a .mhd, its data file): (file to read,
    file to damage)."""
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(path.parent / name, work / name)
    if path.name != name:
        shutil.copy(path, work / path.name)
    return work / name, work / path.name


def test_damaged_files_are_refused_or_read_exactly(tmp_path):
    outcomes: dict[str, int] = {"refused": 0, "exact": 0}
    for name, path, expected, compressed in _corpus(tmp_path / "corpus"):
        grey = expected[..., 1] if expected.ndim == 3 and expected.shape[-1] == 3 else expected
        for label, data in _damaged(path, tmp_path, compressed):
            bad, victim = _fresh_copy(tmp_path, name, path)
            victim.write_bytes(data)
            for entry, fn in _entry_points(bad).items():
                outcome = _check(f"{name} {label}", entry, fn, bad, expected, grey)
                outcomes[outcome] += 1
    assert outcomes["refused"] > 100  # the corpus really was damaged


def _header_lies(header: bytes) -> list[tuple[str, bytes]]:
    """The same MetaImage header with one size field that no longer fits the data."""
    out = []
    m = re.search(rb"CompressedDataSize = (\d+)", header)
    if m:
        n = int(m.group(1))
        for k in (n // 2, n - 1, n + 1, 2 * n):
            out.append((f"CompressedDataSize {n} -> {k}", header.replace(m.group(0), b"%s" % (
                b"CompressedDataSize = %d" % k))))
        out.append(("no CompressedDataSize", header.replace(m.group(0) + b"\n", b"")))
    d = re.search(rb"DimSize = (\d+) (\d+) (\d+)", header)
    x, y, z = (int(v) for v in d.groups())
    for dims in ((x + 1, y, z), (x, y, z - 1), (x, y, z + 1)):
        out.append((f"DimSize {dims}", header.replace(d.group(0), b"DimSize = %d %d %d" % dims)))
    t = re.search(rb"ElementType = (\w+)", header)
    for other in (b"MET_UCHAR", b"MET_DOUBLE"):
        out.append((f"ElementType {other.decode()}", header.replace(t.group(0),
                                                                     b"ElementType = " + other)))
    return [(label, h) for label, h in out if h != header]  # (MET_UCHAR may be no lie)


def test_metaimage_headers_that_lie_about_their_data_are_refused(tmp_path):
    """What SimpleITK trusts: a compressed .mha whose stated size was cut in half gave 273,370
    wrong voxels, read without a word (issue 24)."""
    refused, lies = 0, 0
    for name, path, expected, _ in _corpus(tmp_path / "corpus"):
        if not name.endswith((".mha", ".mhd")):
            continue
        header_file = path.parent / name
        raw = header_file.read_bytes()
        cut = raw.index(b"ElementDataFile")
        for label, header in _header_lies(raw[:cut]):
            lies += 1
            bad, _ = _fresh_copy(tmp_path, name, path)
            bad.write_bytes(header + raw[cut:])
            for entry, fn in _entry_points(bad).items():
                refused += _check(f"{name} {label}", entry, fn, bad, expected,
                                  expected) == "refused"
    assert lies >= 25 and refused == 4 * lies  # every lie, through every entry point


def _label_maps(root: Path) -> list[tuple[Path, np.ndarray]]:
    """Label maps in each format, named as label maps, with 255 (not annotated) in them."""
    root.mkdir()
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 3:9, 4:10] = 1
    lab[2, 5:7, 5:7] = 2
    lab[0] = 255
    out = []
    for name in ("case_seg.nii.gz", "case_seg.nrrd", "case_label.mha", "case_label.mhd"):
        sitk.WriteImage(_sitk(lab), str(root / name), useCompression=True)
        out.append((root / name, lab))
    return out


def test_damaged_label_maps_are_refused_read_exactly_or_said_to_be_images(tmp_path):
    """Through the engine's label reader and the plugin: a damaged label map is refused by
    name, read exactly, or (in the plugin, when its values are no labels) opened as an image
    with a notification that says so. Never silently wrong labels."""
    from napari.utils.notifications import notification_manager

    from training.core.io import read_labels

    for path, lab in _label_maps(tmp_path / "labels"):
        data = path.with_suffix(".zraw") if path.suffix == ".mhd" else path
        for label, damaged in _damaged(data, tmp_path, compressed=True):
            bad, victim = _fresh_copy(tmp_path, path.name, data)
            victim.write_bytes(damaged)
            try:
                got = read_labels(bad)[0]
                assert np.array_equal(got, lab), f"{path.name} {label}: wrong labels"
            except DataError as e:
                assert bad.name in str(e), f"{path.name} {label}: unnamed error {e}"
            seen = len(notification_manager.records)
            try:
                [(got, _, kind)] = read_layers(str(bad))
            except DataError as e:
                assert bad.name in str(e)
                continue
            if kind == "labels":
                assert np.array_equal(np.asarray(got), lab), f"{path.name} {label}: wrong"
            else:
                said = [str(n.message) for n in notification_manager.records[seen:]]
                assert any(bad.name in m for m in said), f"{path.name} {label}: not said"


def test_undamaged_corpus_reads_exactly(tmp_path):
    for name, path, expected, _ in _corpus(tmp_path / "corpus"):
        grey = expected[..., 1] if expected.ndim == 3 and expected.shape[-1] == 3 else expected
        for entry, fn in _entry_points(path.parent / name).items():
            assert _check(name, entry, fn, path.parent / name, expected, grey) == "exact"


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_png_slice_folder_with_a_cut_slice_is_refused(tmp_path, keep):
    folder = tmp_path / "stack"
    folder.mkdir()
    for k in range(4):
        sitk.WriteImage(_sitk(_volume(np.uint8)[k]), str(folder / f"s{k}.png"))
    victim = folder / "s2.png"
    victim.write_bytes(victim.read_bytes()[: int(victim.stat().st_size * keep)])
    for entry, fn in _entry_points(folder).items():
        with pytest.raises(DataError, match="s2.png|stack"):
            fn(folder)
        del entry

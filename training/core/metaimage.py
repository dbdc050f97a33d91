"""Checks on MetaImage files (``.mha``, ``.mhd`` + ``.raw``/``.zraw``) before SimpleITK reads them.

SimpleITK's MetaIO trusts the header: it inflates whatever ``CompressedDataSize`` says, skips the
zlib checksum, and only prints "Uncompress failed" before returning wrong voxels. So the voxel
data is verified here, by the header's own numbers: compressed data must inflate exactly
``CompressedDataSize`` bytes to exactly the voxel count, with a valid checksum; raw data must
hold exactly the voxel count. A compressed layout this cannot verify is refused.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

# MetaIO element types and their sizes in bytes (metaTypes.h)
_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
_HEADER_BYTES = 65536  # a MetaImage header is text; anything longer is not one


def _error(message: str) -> Exception:
    from training.core.io import VolumeReadError  # io imports this module

    return VolumeReadError(message)


def _header(path: Path) -> tuple[dict[str, str], int]:
    """The header's fields (upper-case keys) and the byte offset where the voxel data starts
    (just after the ``ElementDataFile`` line, which MetaIO requires to be the last)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError as e:
        raise _error(f"{path}: cannot read ({e.strerror or e})") from e
    m = re.search(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*([^\r\n]*?)[ \t]*\r?\n", head,
                  re.M | re.I)
    if m is None:  # cut inside its header, or not a MetaImage: SimpleITK says which
        return {}, -1
    fields = {}
    for line in head[: m.start()].decode("latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().upper()] = value.strip()
    fields["ELEMENTDATAFILE"] = m.group(1).decode("latin-1")
    return fields, m.end()


def _voxel_bytes(fields: dict[str, str], path: Path) -> int | None:
    """Bytes of voxel data the header promises, or None when it names no known layout."""
    try:
        dims = [int(v) for v in fields.get("DIMSIZE", "").split()]
        channels = int(fields.get("ELEMENTNUMBEROFCHANNELS", "1"))
    except ValueError:
        raise _error(f"{path}: MetaImage header has a malformed DimSize or "
                     f"ElementNumberOfChannels") from None
    size = _ELEMENT_BYTES.get(fields.get("ELEMENTTYPE", "").upper())
    if not dims or size is None or channels < 1 or min(dims) < 1:
        return None
    n = size * channels
    for d in dims:
        n *= d
    return n


def _verify_inflate(path: Path, start: int, stated: int, expected: int, source: Path) -> None:
    """Inflate exactly ``stated`` bytes of ``path`` from ``start``: the stream must end there,
    pass its checksum and give exactly ``expected`` bytes (streamed, never held whole)."""
    stream = zlib.decompressobj(wbits=47)  # zlib or gzip, with their checksums
    got = used = 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            while used < stated and not stream.eof and got <= expected:
                chunk = f.read(min(1 << 20, stated - used))
                if not chunk:
                    break
                used += len(chunk)
                while chunk and not stream.eof and got <= expected:
                    got += len(stream.decompress(chunk, 1 << 24))
                    chunk = stream.unconsumed_tail
    except OSError as e:
        raise _error(f"{source}: cannot read {path.name} ({e.strerror or e})") from e
    except zlib.error as e:
        raise _error(f"{source}: compressed data is corrupt ({e})") from e
    if got > expected or (stream.eof and got != expected):
        raise _error(f"{source}: compressed data does not hold the {expected:,} bytes of voxels "
                     f"its header promises; the file is corrupt")
    if not stream.eof or stream.unused_data or used != stated:
        raise _error(f"{source}: compressed data does not end where its header says "
                     f"(CompressedDataSize = {stated:,}); the file is cut or corrupt")


def check_metaimage(path: str | Path) -> None:
    """Refuse a MetaImage whose voxel data is missing, cut, corrupt or unverifiable.

    Raises :class:`training.core.io.VolumeReadError` naming the file (and its data file) and why.
    """
    path = Path(path)
    fields, offset = _header(path)
    if offset < 0:
        return
    data_name = fields["ELEMENTDATAFILE"]
    local = data_name.upper() == "LOCAL"
    compressed = fields.get("COMPRESSEDDATA", "false").lower() == "true"
    if not local and (data_name.upper() in ("LIST", "") or "%" in data_name):
        if compressed:  # several data files: their sizes cannot be checked one by one
            raise _error(f"{path}: compressed data in several files ({data_name}) cannot be "
                         f"verified; save it as one .mha or .nii.gz")
        return  # uncompressed slice lists: SimpleITK checks each file's size
    data = path if local else path.parent / data_name
    if not local and not data.is_file():
        raise _error(f"{path}: its data file {data.name} is missing")
    start = offset if local else 0
    expected = _voxel_bytes(fields, path)
    if expected is None:
        if compressed:
            raise _error(f"{path}: compressed MetaImage with an element type or size this "
                         f"reader cannot verify ({fields.get('ELEMENTTYPE', 'none')})")
        return  # SimpleITK reports unknown raw layouts itself
    available = data.stat().st_size - start
    if not compressed:
        try:
            skip = int(fields.get("HEADERSIZE", "0") or 0)  # -1: the data ends the file
        except ValueError:
            raise _error(f"{path}: MetaImage HeaderSize {fields['HEADERSIZE']!r} is not a "
                         f"number") from None
        held = available - max(skip, 0)
        # data that ends early is cut; data that goes on means DimSize or ElementType lies
        if held < expected or (skip >= 0 and held != expected):
            where = "" if local else f" in {data.name}"
            raise _error(f"{path}: {max(held, 0):,} bytes of voxel data{where} where the header "
                         f"promises {expected:,}; the file is "
                         + ("truncated" if held < expected else "not what its header says"))
        return
    stated = fields.get("COMPRESSEDDATASIZE")
    if stated is None or not stated.isdigit() or int(stated) < 1:
        raise _error(f"{path}: compressed MetaImage without a valid CompressedDataSize "
                     f"({stated!r}) cannot be verified; save it again")
    if available < int(stated):
        raise _error(f"{path}: compressed data is truncated: {max(available, 0):,} bytes where "
                     f"the header states {int(stated):,}" + ("" if local else f" ({data.name})"))
    _verify_inflate(data, start, int(stated), expected, path)

"""The ``session.json`` record, checked field by field before a session is rebuilt from it.

A record edited by hand, cut by a crash of another tool or written by a future version must
give one clear :class:`SessionRecordError` naming the file and the field, never a ``KeyError``
deep inside the reopen, nor a slice index that fails only when the user steps onto it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class SessionRecordError(ValueError):
    """A ``session.json`` field that is missing or holds the wrong kind of value."""


@dataclass
class Record:
    """The checked contents of a session record (plain data, indices as ints)."""

    image_path: str | None
    shape: list[int]
    geometry: dict
    labelled_slices: dict[int, set[int]]
    tags: dict[int, int]
    versions: list[dict]
    current_version: str | None
    settings: dict


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _index(key: Any, limit: int) -> int | None:
    """A dict key such as "3" as an index below ``limit``, else None."""
    try:
        i = int(key)
    except (TypeError, ValueError):
        return None
    return i if 0 <= i < limit and str(i) == str(key).strip() else None


def parse_record(d: Any, record: Path, settings_type: type) -> Record:
    """Check every field Session.open uses; raises :class:`SessionRecordError` naming
    ``record`` and the field. ``settings_type`` is the Settings dataclass (its defaults give
    each setting's type)."""

    def bad(field: str, why: str) -> SessionRecordError:
        return SessionRecordError(f"{record}: field {field!r} {why}")

    if not isinstance(d, dict):
        raise SessionRecordError(f"{record}: the record is a {type(d).__name__}, not an object "
                                 f"of fields")
    shape = d.get("shape")
    if not isinstance(shape, list) or len(shape) not in (2, 3) or not all(
            _is_int(v) and v > 0 for v in shape):
        raise bad("shape", f"must list 2 or 3 positive whole numbers, found {shape!r}")
    ndim = len(shape)

    geometry = d.get("geometry")
    if not isinstance(geometry, dict):
        raise bad("geometry", f"must be an object with spacing, origin and direction, found "
                              f"{geometry!r}")
    for key, n in (("spacing", ndim), ("origin", ndim), ("direction", ndim * ndim)):
        v = geometry.get(key)
        if not isinstance(v, list) or len(v) != n or not all(_is_number(x) for x in v):
            raise bad(f"geometry.{key}", f"must list {n} finite numbers, found {v!r}")
    if not all(s > 0 for s in geometry["spacing"]):
        raise bad("geometry.spacing", f"must be positive, found {geometry['spacing']!r}")

    image_path = d.get("image_path")
    if image_path is not None and not isinstance(image_path, str):
        raise bad("image_path", f"must be a path or null, found {image_path!r}")

    labelled: dict[int, set[int]] = {a: set() for a in range(ndim)}
    slices = d.get("labelled_slices", {})
    if not isinstance(slices, dict):
        raise bad("labelled_slices", f"must map an axis to slice numbers, found {slices!r}")
    for key, idx in slices.items():
        axis = _index(key, ndim)
        if axis is None:
            raise bad("labelled_slices", f"names axis {key!r}; the scan has axes 0..{ndim - 1}")
        if not isinstance(idx, list):
            raise bad(f"labelled_slices.{key}", f"must list slice numbers, found {idx!r}")
        for i in idx:
            if not _is_int(i) or not 0 <= i < shape[axis]:
                raise bad(f"labelled_slices.{key}", f"holds slice {i!r}; axis {axis} has "
                                                    f"slices 0..{shape[axis] - 1}")
            labelled[axis].add(i)

    tags: dict[int, int] = {}
    raw_tags = d.get("tags", {})
    if not isinstance(raw_tags, dict):
        raise bad("tags", f"must map a slice number to 0 or 1, found {raw_tags!r}")
    for key, t in raw_tags.items():
        i = _index(key, shape[0])
        if i is None:
            raise bad("tags", f"tags slice {key!r}; the scan has slices 0..{shape[0] - 1}")
        if t not in (0, 1) or isinstance(t, bool):
            raise bad(f"tags.{key}", f"must be 0 or 1, found {t!r}")
        tags[i] = int(t)

    versions = d.get("versions", [])
    if not isinstance(versions, list):
        raise bad("versions", f"must be a list of model versions, found {versions!r}")
    ids = []
    for k, v in enumerate(versions):
        if not isinstance(v, dict):
            raise bad(f"versions[{k}]", f"must be an object, found {v!r}")
        for key in ("id", "path"):
            if not isinstance(v.get(key), str) or not v[key]:
                raise bad(f"versions[{k}].{key}", f"must be a non-empty text, found "
                                                  f"{v.get(key)!r}")
        for key, ok, kind in (("steps", _is_int, "a whole number"),
                              ("score", _is_number, "a number"),
                              ("parent_score", _is_number, "a number"),
                              ("adopted", lambda x: isinstance(x, bool), "true or false")):
            if v.get(key) is not None and not ok(v[key]):
                raise bad(f"versions[{k}].{key}", f"must be {kind}, found {v[key]!r}")
        ids.append(v["id"])
    current = d.get("current_version")
    if current is not None and current not in ids:
        raise bad("current_version", f"is {current!r}, which is no listed version "
                                     f"({', '.join(ids) or 'none'})")

    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise bad("settings", f"must be an object, found {settings!r}")
    defaults = settings_type()
    for f in fields(settings_type):
        if f.name not in settings:
            continue
        v, default = settings[f.name], getattr(defaults, f.name)
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = _is_int(v)
        elif isinstance(default, float):
            ok = _is_number(v)
        elif isinstance(default, list):
            ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
        else:
            ok = isinstance(v, type(default))
        if not ok:
            raise bad(f"settings.{f.name}", f"must be like {default!r}, found {v!r}")
    return Record(image_path, list(shape), geometry, labelled, tags, versions, current,
                  settings)

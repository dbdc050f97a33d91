"""Output paths, checked before any work: never an input, never twice, and writable.

A command that writes over its own input (``predict --input x --output x``), writes two
outputs to one file, or learns only after hours that its folder is read-only, destroys a
user's file or their time. Every command resolves all of its outputs against all of its inputs
first, with :func:`check_outputs`, and fails with both paths named.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from training.core.io import DataError


class OutputPathError(DataError):
    """An output that would destroy an input or another output, or cannot be written."""


def _real(path: str | os.PathLike) -> Path:
    """The path as the file system sees it: ``~`` expanded, symlinks and ``..`` resolved."""
    return Path(path).expanduser().resolve()


def _same_file(a: Path, b: Path) -> bool:
    """Same path, or two names of one file (a hard link)."""
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_outputs(
    outputs: Iterable[tuple[str, str | os.PathLike]],
    inputs: Iterable[str | os.PathLike] = (),
    input_folders: Iterable[str | os.PathLike] = (),
    writable: bool = True,
) -> None:
    """Refuse an output that is an input, lies inside an input folder being read, or is the
    same file as another output; with ``writable``, one whose folder cannot be written.

    ``outputs`` are (what, path) pairs such as ``("--output", "x.nii.gz")``; ``what`` names
    the option in the message. Raises :class:`OutputPathError` naming both paths.
    """
    ins = [(Path(p), _real(p)) for p in inputs]
    folders = [(Path(p), _real(p)) for p in input_folders]
    seen: list[tuple[str, Path, Path]] = []
    for what, given in outputs:
        out = _real(given)
        for shown, real in ins:
            if _same_file(out, real):
                raise OutputPathError(f"{what} {given} is the input {shown}: refusing to "
                                      f"overwrite it; choose another output")
        for shown, real in folders:
            if _inside(out, real):
                raise OutputPathError(f"{what} {given} lies inside the input folder {shown}, "
                                      f"which is being read; choose an output outside it")
        for other_what, other_given, other in seen:
            if _same_file(out, other):
                raise OutputPathError(f"{what} {given} is the same file as {other_what} "
                                      f"{other_given}: one would overwrite the other")
        seen.append((what, Path(given), out))
    if writable:
        probed: set[Path] = set()
        for what, given, _ in seen:
            check_writable(given, what, probed)


def check_writable(path: str | os.PathLike, what: str = "output",
                   probed: set[Path] | None = None) -> None:
    """Refuse ``path`` when its folder (or the nearest one that exists) cannot take a new file,
    or when it is a folder where a file is expected: found now, not after the work is done.

    The folder is probed by creating and removing a file, which also catches a read-only mount
    and a user (root included) whose rights ``os.access`` misjudges. Folders in ``probed`` are
    not probed again (and are added to it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; name the file to write")
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{what} {path}: {folder} is a file, not a folder")
    if probed is not None:
        if folder in probed:
            return
        probed.add(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".semiseg-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"{what} {path}: cannot write in {folder} "
                              f"({e.strerror or e})") from None


def check_output_folder(path: str | os.PathLike, what: str = "output") -> None:
    """:func:`check_writable` for a folder that will receive several files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder")
    check_writable(path / ".probe", what)

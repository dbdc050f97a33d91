"""A set of output files that lands all together or not at all.

``semiseg predict`` on a folder writes many files. Written in place, a full disk on the tenth
leaves nine new predictions beside stale ones of an earlier run, and nobody can tell which is
which. Here each file is written (verified, by the caller's writer) into a hidden staging folder
beside its target, and only when every one of them is complete are they renamed into place.
Renames within one folder need no space, so a full disk can only stop the staging, which
leaves every target as it was.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from training.core.io import WriteError


class StagedWrites:
    """Stage files with :meth:`path_for`, then :meth:`commit`; leaving the ``with`` block
    without committing (an error, Ctrl-C) removes everything staged and changes no target."""

    def __init__(self) -> None:
        self._token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._staging: dict[Path, Path] = {}  # target folder -> its staging folder
        self._made: list[Path] = []  # target folders this set created (removed on abort)
        self._files: list[tuple[Path, Path]] = []  # (staged, target)

    def path_for(self, target: str | os.PathLike) -> Path:
        """Where to write the file that will become ``target`` (same name, staging folder)."""
        target = Path(target)
        folder = target.parent
        if folder not in self._staging:
            missing = []
            probe = folder
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            folder.mkdir(parents=True, exist_ok=True)
            self._made.extend(reversed(missing))
            staging = folder / f".semiseg-staging-{self._token}"
            staging.mkdir()
            self._staging[folder] = staging
        staged = self._staging[folder] / target.name
        self._files.append((staged, target))
        return staged

    def commit(self) -> list[Path]:
        """Move every staged file onto its target; returns the targets."""
        done: list[Path] = []
        for staged, target in self._files:
            try:
                os.replace(staged, target)
            except OSError as e:
                kept = [str(t) for _, t in self._files if t not in done and t != target]
                raise WriteError(
                    f"cannot move {target} into place ({e.strerror or e}); new: "
                    f"{', '.join(map(str, done)) or 'none'}; not written: {target}"
                    + (f", {', '.join(kept)}" if kept else "")) from e
            done.append(target)
        self._files = []
        self._cleanup(remove_made=False)
        return done

    def abort(self) -> None:
        """Drop everything staged; targets are untouched."""
        self._files = []
        self._cleanup(remove_made=True)

    def _cleanup(self, remove_made: bool) -> None:
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging = {}
        if remove_made:
            for folder in reversed(self._made):  # deepest first; only if still empty
                try:
                    folder.rmdir()
                except OSError:
                    pass
        self._made = []

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None or self._files:
            self.abort()

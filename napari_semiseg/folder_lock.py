"""One writer per session folder: a lock file naming the process that autosaves there.

Two napari windows on the same scan must never write into one folder, or one silently erases the
other's slices. The lock is a file created exclusively, whole (written beside it, then
hard-linked into place), so no window ever sees it half written; a lock left by a process that
is gone (a crash, kill -9) is taken over. A lock file that names no process (empty, or not
ours) cannot be judged stale, so the folder is refused with the file named.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path

LOCK_FILE = ".napari-semiseg.lock"


class FolderLockedError(RuntimeError):
    """Another live process is autosaving into this folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class FolderLock:
    """Hold ``folder`` for this process until :meth:`release` (or the process ends)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False
        # one holder per session object, even within one process (two viewers in a script)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(4)}

    def owner(self) -> dict | None:
        """Who holds the lock: {"pid", "host", ...}, or None (no lock, or one naming no one)."""
        try:
            other = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(other, dict) or not isinstance(other.get("pid"), int) \
                or not isinstance(other.get("host"), str):
            return None
        return other

    def _create(self) -> bool:
        """Create the lock file with its content in one step; False if it exists."""
        tmp = self.folder / f"{LOCK_FILE}.{self.me['pid']}.{self.me['token']}"
        tmp.write_text(json.dumps(self.me), encoding="utf-8")
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT drives): exclusive create
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                json.dump(self.me, fh)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def acquire(self) -> FolderLock:
        """Take the folder; raises :class:`FolderLockedError` if a live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = self.me
        for _attempt in range(3):
            if not self._create():
                other = self.owner()
                if other is None and self.path.exists():
                    raise FolderLockedError(
                        f"{self.folder}: its lock file {self.path.name} names no process (it "
                        f"is empty or unreadable), so whether a window still autosaves here "
                        f"cannot be told; delete {self.path} if none does") from None
                if other == me:
                    self.held = True
                    return self
                if other and other.get("host") == me["host"] and _alive(int(other["pid"])):
                    which = "this" if int(other["pid"]) == me["pid"] else "another"
                    raise FolderLockedError(
                        f"{self.folder} is in use by {which} napari-semiseg window "
                        f"(process {other['pid']}); open a copy or close that window"
                    ) from None
                if other and other.get("host") != me["host"]:
                    raise FolderLockedError(
                        f"{self.folder} is in use on {other.get('host')} (process "
                        f"{other.get('pid')}); delete {self.path.name} if that is not so"
                    ) from None
                try:  # stale: its process is gone
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            self.held = True
            return self
        raise FolderLockedError(f"{self.folder}: could not take the folder lock")

    def release(self) -> None:
        if self.held and self.owner() == self.me:
            try:
                self.path.unlink()
            except OSError:
                pass
        self.held = False

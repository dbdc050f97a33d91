"""The session's files: autosave after every change, Save session, and reopening a folder.

:class:`SessionFiles` is the persistence half of :class:`napari_semiseg.session.Session` (the
state half decides; this one writes and reads). Every write is atomic and verified, labels
first and the ``session.json`` record last, so a killed process never leaves half a session;
with :meth:`SessionFiles.write_in_background` the writes run on a writer thread.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_semiseg.autosave import BackgroundWriter
from napari_semiseg.folder_lock import FolderLock
from napari_semiseg.io import (
    NOT_ANNOTATED,
    DataError,
    Geometry,
    LabelShapeError,
    check_labels_fit,
    read_volume,
    strip_suffix,
    write_volume,
)
from napari_semiseg.session_record import SessionRecordError, parse_record
from training.core.atomic import atomic_write
from training.core.io import rgb_channels, rgb_to_grey

if TYPE_CHECKING:
    from napari_semiseg.session import Session

FORMAT = "napari-semiseg-session/1"
SESSION_FILE = "session.json"
PREDICTION_FILE = "prediction.nii.gz"
USER_LABELS_FILE = "user_labels.nii.gz"
UNCERTAINTY_FILE = "uncertainty.npy"
IMAGE_FILE = "image.nii.gz"  # only written when the scan has no file of its own
MODELS_DIR = "models"


def default_folder(image_path: str | os.PathLike | None = None) -> Path:
    """Where a session autosaves when the user has not chosen a folder.

    ``$NAPARI_SEMISEG_HOME/sessions/<scan name>-<time>-<pid>-<random>`` (default home:
    ``~/.napari-semiseg``): unique per window, so two windows on one scan started in the same
    second never share a folder.
    """
    home = Path(os.environ.get("NAPARI_SEMISEG_HOME", Path.home() / ".napari-semiseg"))
    stem = strip_suffix(image_path) if image_path else "scan"
    unique = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"
    return home / "sessions" / f"{stem}-{unique}"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def _atomic_copy(src: Path, dst: Path) -> None:
    def copy(fh) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fh)

    atomic_write(dst, copy)


def grey_scan(data: Any, rgb: bool = False) -> np.ndarray:
    """The array a session segments: RGB(A) stacks (LGG PNGs) keep the FLAIR channel only."""
    return np.asarray(rgb_to_grey(data) if rgb else data)


def scan_channels(data: Any, rgb: bool = False) -> np.ndarray | None:
    """The scan with every channel, (z, y, x, c), for models that read them; None for a grey
    scan. The alpha of RGBA is not an image channel and is dropped."""
    return rgb_channels(data) if rgb else None


class SessionError(ValueError):
    """A session folder that cannot be opened, or an action the session cannot take."""


class SessionFiles:
    """Autosave, save and open for a session; mixed into :class:`~napari_semiseg.session.Session`,
    whose state (image, prediction, user labels, versions...) it writes and reads."""

    def _init_saving(self) -> None:
        # the folder is this window's alone while it autosaves there
        self._lock = (FolderLock(self.folder).acquire()
                      if self.autosave_enabled and self.folder is not None else None)
        if self._lock is not None:  # a session that is dropped frees its folder too
            weakref.finalize(self, self._lock.release)
        self.autosave_error: str | None = None
        # called once per run of failures (the widget shows a notification), not per stroke;
        # from the writer thread when writes run in the background
        self.on_autosave_error: Any = None
        self.warnings: list[str] = []
        self._writer: BackgroundWriter | None = None

    def write_in_background(self) -> None:
        """Autosave on a writer thread from now on (the plugin's choice: a stroke must not wait
        for a verified write); :meth:`flush` waits for it."""
        if self._writer is None:
            me = weakref.ref(self)  # the thread must not keep a dropped session (and its lock)

            def failed(e: BaseException) -> None:
                if (s := me()) is not None:
                    s._autosave_failed(e)

            def worked() -> None:
                if (s := me()) is not None:
                    s._autosave_worked()

            self._writer = BackgroundWriter(self._write_parts, failed, worked)
            weakref.finalize(self, self._writer.stop)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait for background autosaves to reach the disk; False on timeout."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self) -> None:
        """Write what is pending, stop autosaving and free the folder for another window."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.autosave_enabled = False
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def _store_model(src: Path, version_id: str, folder: Path) -> str:
        rel = Path(MODELS_DIR) / f"{version_id}.pt"
        dst = folder / rel
        if src.resolve() != dst.resolve():
            _atomic_copy(src, dst)
        return rel.as_posix()

    # ----- saving -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "image_path": self.image_path,
            "shape": list(self.image.shape),
            "geometry": self.geometry.to_dict(),
            "labelled_slices": {str(a): sorted(s) for a, s in self.labelled.items()},
            "tags": {str(i): t for i, t in sorted(self.tags.items())},
            "versions": [v.to_dict() for v in self.versions],
            "current_version": self.current,
            "settings": asdict(self.settings),
            "files": {"prediction": PREDICTION_FILE, "user_labels": USER_LABELS_FILE,
                      "uncertainty": UNCERTAINTY_FILE if self.uncertainty is not None else None},
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the whole session to ``folder`` (default: its own) and autosave there from now.

        Saving to a new folder copies the model checkpoints into ``folder/models``.
        """
        if folder is None and self.folder is None:
            raise SessionError("choose a folder to save the session in")
        if self._writer is not None:  # one writer at a time; everything is written below
            self._writer.flush()
            self._writer.drop_failed()
        target = Path(folder) if folder is not None else self.folder
        assert target is not None
        moving = self.folder is None or target.resolve() != self.folder.resolve()
        new_lock = FolderLock(target).acquire() if moving else None
        old_folder, old_paths = self.folder, [v.path for v in self.versions]
        try:
            target.mkdir(parents=True, exist_ok=True)
            self.sync_user_labels()
            for v in self.versions:
                v.path = self._store_model(Path(self.model_file(v)), v.id, target)
            self.folder = target
            self._dirty |= {"json", "prediction", "user_labels", "uncertainty", "image"}
            self._write_dirty()
        except BaseException:
            # autosave keeps going to the last folder that holds a complete session
            self.folder = old_folder
            for v, p in zip(self.versions, old_paths, strict=True):
                v.path = p
            self._dirty |= {"json", "prediction", "user_labels", "uncertainty"}
            if new_lock is not None:
                new_lock.release()
            raise
        if new_lock is not None:
            if self._lock is not None:
                self._lock.release()
            self._lock = new_lock
            weakref.finalize(self, new_lock.release)
        self.autosave_error = None
        return target

    def _autosave(self) -> None:
        """Write what changed. A failure (full disk) keeps the last good autosave, is reported
        once through ``on_autosave_error`` and retried at the next change; the work itself is
        safe in memory. With :meth:`write_in_background`, copies go to the writer thread."""
        if not (self.autosave_enabled and self.folder is not None):
            return
        if self._writer is not None:
            parts = self._take_dirty(copy=True)
            if parts["names"]:
                self._writer.submit(parts)
            return
        try:
            self._write_dirty()
        except (OSError, DataError) as e:
            self._autosave_failed(e)
            return
        self._autosave_worked()

    def _autosave_failed(self, e: BaseException) -> None:
        first = self.autosave_error is None
        self.autosave_error = (
            f"Autosave to {self.folder} failed: {e}. Your work is kept in this window and "
            f"the last good autosave is untouched; free some disk space or use Save session "
            f"to another place.")
        if first and self.on_autosave_error is not None:
            self.on_autosave_error(self.autosave_error)

    def _autosave_worked(self) -> None:
        self.autosave_error = None

    def _write_dirty(self) -> None:
        """Write what changed now, on this thread."""
        parts = self._take_dirty(copy=False)
        try:
            self._write_parts(parts)
        except BaseException:
            self._dirty |= parts["names"]  # try again on the next change
            raise

    def _take_dirty(self, copy: bool) -> dict:
        """What changed, ready to write (arrays copied for another thread with ``copy``)."""
        folder = self.folder
        assert folder is not None
        dirty, self._dirty = self._dirty, set()
        own = (lambda a: a.copy()) if copy else (lambda a: a)
        parts: dict = {"folder": folder, "geometry": self.geometry, "names": set(dirty)}
        if self.image_path is None and ("image" in dirty or not (folder / IMAGE_FILE).exists()):
            parts["image"] = self.image  # never changed after the session starts
            parts["names"].add("image")
        if "user_labels" in dirty:
            parts["user_labels"] = own(self.user_labels)
        if "prediction" in dirty:
            parts["prediction"] = own(self.prediction)
        if "uncertainty" in dirty and self.uncertainty is not None:
            parts["uncertainty"] = own(self.uncertainty)
        if dirty:
            parts["json"] = json.dumps(self.to_dict(), indent=2).encode()
        return parts

    @staticmethod
    def _write_parts(parts: dict) -> None:
        """Label files first and the record last, each atomically (any thread)."""
        folder, geometry = parts["folder"], parts["geometry"]
        folder.mkdir(parents=True, exist_ok=True)
        if "image" in parts:
            write_volume(folder / IMAGE_FILE, parts["image"], geometry)
        if "user_labels" in parts:
            write_volume(folder / USER_LABELS_FILE, parts["user_labels"], geometry)
        if "prediction" in parts:
            write_volume(folder / PREDICTION_FILE, parts["prediction"], geometry)
        if "uncertainty" in parts:
            _atomic_save_npy(folder / UNCERTAINTY_FILE, parts["uncertainty"])
        if "json" in parts:
            _atomic_write_bytes(folder / SESSION_FILE, parts["json"])

    @classmethod
    def open(cls, folder: str | os.PathLike, autosave: bool = True) -> Session:
        """Reopen a saved (or autosaved) session folder."""
        from napari_semiseg.session import ModelVersion, Settings
        folder = Path(folder)
        record = folder / SESSION_FILE
        if not record.is_file():
            raise SessionError(f"{folder} is not a napari-semiseg session (no {SESSION_FILE})")
        try:
            d = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SessionError(f"{record}: unreadable session record ({e})") from e
        if not isinstance(d, dict):
            raise SessionError(f"{record}: the record is a {type(d).__name__}, not an object "
                               f"of fields")
        if d.get("format") != FORMAT:
            raise SessionError(f"{record}: not a {FORMAT} record (field 'format')")
        try:
            rec = parse_record(d, record, Settings)
        except SessionRecordError as e:
            raise SessionError(str(e)) from None
        geometry = Geometry.from_dict(rec.geometry)
        image_path = rec.image_path
        if image_path:
            if not Path(image_path).exists():
                raise SessionError(f"the session's scan is missing: {image_path}")
            vol = read_volume(image_path, as_labels=False)
            image = grey_scan(vol.data, vol.rgb)
            channels = scan_channels(vol.data, vol.rgb)
        else:
            image = read_volume(folder / IMAGE_FILE, as_labels=False).data
            channels = None
        if image.ndim == 2:
            image = image[None]
        if list(image.shape) != rec.shape:
            raise LabelShapeError(f"the scan {image_path} now has shape {image.shape}, the "
                                  f"session was made on {tuple(rec.shape)}")
        s = cls.__new__(cls)
        s.image = image
        s.channels = channels
        s.geometry = geometry
        s.image_path = image_path
        s.folder = folder
        s.autosave_enabled = autosave
        s._init_saving()
        s._before_preview = None
        s._dirty = set()
        s.settings = Settings.from_dict(rec.settings)
        s.labelled = rec.labelled_slices
        s.tags = rec.tags
        s.versions = [ModelVersion.from_dict(v) for v in rec.versions]
        s.current = rec.current_version
        s.prediction = s._read_labels(folder / PREDICTION_FILE, "prediction")
        s.user_labels = s._read_labels(folder / USER_LABELS_FILE, "user labels")
        s.uncertainty = s._read_uncertainty(folder / UNCERTAINTY_FILE)
        # a failed or killed autosave can leave user labels newer than the record: a slice with
        # the user's voxels is labelled whatever the record says, so no stroke is dropped
        unrecorded = (s.user_labels != NOT_ANNOTATED) & ~s.labelled_mask()
        for z in np.flatnonzero(unrecorded.reshape(len(unrecorded), -1).any(1)):
            s.labelled[0].add(int(z))
        # a kill between two writes can leave a labelled slice whose voxels are only in the
        # prediction file; the user's strokes win
        mask = s.labelled_mask()
        missing = mask & (s.user_labels == NOT_ANNOTATED)
        s.user_labels[missing] = s.prediction[missing]
        s.user_labels[~mask] = NOT_ANNOTATED
        s.prediction[mask] = s.user_labels[mask]
        return s

    @classmethod
    def reopen(cls, folder: str | os.PathLike, current: Session | None = None) -> Session:
        """Open ``folder`` in a window that shows ``current``.

        When ``folder`` is ``current``'s own autosave folder, ``current`` keeps it (and keeps
        autosaving there) until the new session has opened completely: a record that fails to
        open changes nothing, where closing first would leave the window silently not saving.
        """
        own = (current is not None and current.folder is not None
               and Path(folder).resolve() == current.folder.resolve())
        if not own:
            return cls.open(folder)
        assert current is not None
        current.flush()  # what the window shows is on disk before it is read back
        s = cls.open(folder, autosave=False)
        current.close()
        s.start_autosave()
        return s

    def start_autosave(self) -> None:
        """Take the folder and autosave into it from now on."""
        if self.autosave_enabled or self.folder is None:
            return
        self._lock = FolderLock(self.folder).acquire()
        weakref.finalize(self, self._lock.release)
        self.autosave_enabled = True

    def _read_uncertainty(self, path: Path) -> np.ndarray | None:
        """The saved uncertainty map, or None (with a warning) when it does not fit: it is only
        a view of the model and Predict makes it again."""
        if not path.is_file():
            return None
        try:
            unc = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            self.warnings.append(f"{path.name} is unreadable ({e}); run Predict to remake it")
            return None
        if unc.shape != self.image.shape or not np.issubdtype(unc.dtype, np.floating) \
                or not np.isfinite(unc).all():
            self.warnings.append(f"{path.name} does not fit the scan (shape {unc.shape}, "
                                 f"{unc.dtype}); run Predict to remake it")
            return None
        return unc

    def _read_labels(self, path: Path, name: str) -> np.ndarray:
        if not path.is_file():
            raise SessionError(f"the session's {name} file is missing: {path}")
        data = read_volume(path, as_labels=True).data
        if data.ndim == 2:
            data = data[None]
        check_labels_fit(data.shape, self.image.shape, name, "the scan")
        return np.ascontiguousarray(data.astype(np.uint8))

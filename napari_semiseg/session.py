"""The interactive loop's state, Qt-free: scan, prediction, labelled slices, model versions.

The dock widget binds this object to napari layers; everything that decides something lives here
so it can be tested without a display. Two invariants:

- the voxels of a labelled slice (painted or accepted by the user) are kept in ``user_labels`` and
  no model output ever overwrites them (:meth:`Session.merge_prediction`);
- every change is autosaved atomically to the session folder, so a crash loses no stroke.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from training.atomic import atomic_write
from training.io import rgb_to_grey
from training.loop import (
    SUGGEST_BODY_FIRST,
    SUGGEST_COVERAGE,
    SUGGEST_MAIN_STRUCTURE,
    SUGGEST_PER_SLICE,
    NoLabelledSlicesError,
    accept_retrain,
    largest_section,
    mean_score,
    rank_uncertain_slices,
    slice_index,
    split_held_back,
)

FORMAT = "napari-semiseg-session/1"
SESSION_FILE = "session.json"
PREDICTION_FILE = "prediction.nii.gz"
USER_LABELS_FILE = "user_labels.nii.gz"
UNCERTAINTY_FILE = "uncertainty.npy"
IMAGE_FILE = "image.nii.gz"  # only written when the scan has no file of its own
MODELS_DIR = "models"

Slice = tuple[int, int]  # (axis, index)

__all__ = [
    "ModelVersion",
    "NoLabelledSlicesError",
    "Session",
    "SessionError",
    "Settings",
    "default_folder",
]


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


def grey_scan(data: Any, rgb: bool = False) -> np.ndarray:
    """The array a session segments: RGB(A) stacks (LGG PNGs) keep the FLAIR channel only."""
    return np.asarray(rgb_to_grey(data) if rgb else data)


class SessionError(ValueError):
    """A session folder that cannot be opened, or an action the session cannot take."""


@dataclass
class Settings:
    """What the user chose for retraining; saved with the session."""

    method: str = "mean_teacher"
    steps: int = 50
    axis: int = 0
    held_back_fraction: float = 0.25
    # judge each retrain on held-back painted slices. Off for a model taught from scratch: one
    # held-back slice (often empty) let a collapsed model through, and every slice is needed to
    # learn from (LA train split: final Dice 70 without judging, 35-43 with;
    # benchmarks/results/la_effort_train_holdback*.md)
    judge_retrains: bool = True
    tolerance: float = 0.01  # Dice points a retrain may lose on held-back slices (noise)
    mc_samples: int = 0
    seed: int = 0
    # names of the label values, background first (from the model, or typed by the user)
    class_names: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class ModelVersion:
    """One model the session knows: the starting model or the result of one retrain."""

    id: str
    path: str
    parent: str | None = None
    method: str | None = None
    steps: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    score: float | None = None  # mean Dice on the held-back labelled slices
    parent_score: float | None = None  # the parent's Dice on the same slices
    adopted: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelVersion:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def _atomic_copy(src: Path, dst: Path) -> None:
    def copy(fh) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fh)

    atomic_write(dst, copy)


class Session:
    """Image, prediction, labelled-slice record, model versions and settings of one scan.

    ``prediction`` is the array the widget shows (and the user paints on): it is updated in place
    so a napari layer that shares it sees every change. ``user_labels`` holds the user's voxels on
    labelled slices and 255 (not annotated) everywhere else.

    With a ``folder``, the session autosaves there after every change (turn off with
    ``autosave=False``); without one nothing is written until :meth:`save`.
    """

    def __init__(
        self,
        image: np.ndarray,
        geometry: Geometry | None = None,
        image_path: str | os.PathLike | None = None,
        prediction: np.ndarray | None = None,
        folder: str | os.PathLike | None = None,
        settings: Settings | None = None,
        autosave: bool = True,
    ) -> None:
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise SessionError(f"the scan must be 2-D or 3-D, got shape {image.shape}")
        if image.ndim == 2:
            image = image[None]
        self.image = image
        self.geometry = geometry or Geometry.identity(3)
        if self.geometry.ndim == 2:  # a single 2-D slice: lift its geometry to (x, y, 1)
            sp, org, d = self.geometry.spacing, self.geometry.origin, self.geometry.direction
            self.geometry = Geometry((*sp, 1.0), (*org, 0.0),
                                     (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0),
                                     self.geometry.source)
        self.image_path = str(image_path) if image_path else None
        self.prediction = np.zeros(image.shape, dtype=np.uint8)
        self.user_labels = np.full(image.shape, NOT_ANNOTATED, dtype=np.uint8)
        self.uncertainty: np.ndarray | None = None
        self.labelled: dict[int, set[int]] = {a: set() for a in range(image.ndim)}
        self.tags: dict[int, int] = {}  # slice along axis 0 -> 1 (structure) / 0 (none)
        self.versions: list[ModelVersion] = []
        self.current: str | None = None
        self.settings = settings or Settings()
        self.folder = Path(folder) if folder else None
        self.autosave_enabled = autosave
        self._init_saving()
        self._before_preview: np.ndarray | None = None
        self._dirty: set[str] = {"json", "prediction", "user_labels"}
        if prediction is not None:
            self._set_prediction_array(prediction)
        self._autosave()

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

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, image_path: str | os.PathLike, **kwargs: Any) -> Session:
        """A new session on a scan file (any format :func:`napari_semiseg.io.read_volume` reads)."""
        vol = read_volume(image_path, as_labels=False)
        return cls(grey_scan(vol.data, vol.rgb), vol.geometry, image_path=image_path, **kwargs)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)

    def _check_fits(self, array: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim == 2 and self.image.shape[0] == 1:
            array = array[None]
        check_labels_fit(array.shape, self.image.shape, name, "the scan")
        return array

    def _set_prediction_array(self, prediction: np.ndarray) -> None:
        prediction = self._check_fits(prediction, "prediction")
        self._check_label_values(prediction, "prediction")
        self.prediction[...] = prediction

    @staticmethod
    def _check_label_values(array: np.ndarray, name: str) -> None:
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
            raise LabelShapeError(f"{name} must hold integer labels, found {array.dtype}")
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise LabelShapeError(f"{name} holds values outside 0..255")

    # ----- structures -------------------------------------------------------------------------

    def set_class_names(self, names: Sequence[str]) -> None:
        """Name the label values (background first); a name per value the user has painted."""
        names = [str(n).strip() for n in names]
        if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
            raise SessionError("name the background and at least one structure, each once")
        if len(names) > NOT_ANNOTATED:
            raise SessionError("at most 254 structures (255 means 'not annotated')")
        used = self.user_labels[self.user_labels != NOT_ANNOTATED]
        if used.size and int(used.max()) >= len(names):
            raise SessionError(f"label {int(used.max())} is painted: it needs a name too")
        self.settings.class_names = names
        self._dirty.add("json")
        self._autosave()

    def name_new_label(self, value: int) -> list[int]:
        """After painting ``value``: if it has no name yet (a new structure), name it and any
        value below it "structure k"; returns the values named (none when it was known).

        Only the painted value is looked at: this runs after every stroke."""
        names = list(self.settings.class_names)
        if not names or not len(names) <= int(value) < NOT_ANNOTATED:
            return []
        new = list(range(len(names), int(value) + 1))
        self.set_class_names(names + [f"structure {k}" for k in new])
        return new

    # ----- labelled slices --------------------------------------------------------------------

    def _check_slice(self, axis: int, index: int) -> tuple[int, int]:
        if not 0 <= axis < self.image.ndim:
            raise IndexError(f"axis {axis} does not exist in a {self.image.ndim}-D scan")
        n = self.image.shape[axis]
        if not 0 <= index < n:
            raise IndexError(f"slice {index} is outside 0..{n - 1} on axis {axis}")
        return int(axis), int(index)

    def labelled_slices(self, axis: int | None = None) -> list[int] | list[Slice]:
        """Sorted labelled slice indices along ``axis``, or all ``(axis, index)`` pairs."""
        if axis is not None:
            return sorted(self.labelled.get(axis, ()))
        return [(a, i) for a in sorted(self.labelled) for i in sorted(self.labelled[a])]

    @property
    def n_labelled(self) -> int:
        return sum(len(s) for s in self.labelled.values())

    def is_labelled(self, axis: int, index: int) -> bool:
        return index in self.labelled.get(axis, ())

    def labelled_mask(self) -> np.ndarray:
        """Boolean volume: True on every voxel of every labelled slice (any axis)."""
        mask = np.zeros(self.image.shape, dtype=bool)
        for axis, indices in self.labelled.items():
            for i in indices:
                mask[slice_index(mask.ndim, axis, i)] = True
        return mask

    def mark_labelled(self, axis: int, index: int, labels: np.ndarray | None = None) -> None:
        """Record slice ``index`` along ``axis`` as labelled by the user.

        The slice's voxels are taken from ``labels`` (a 2-D slice) when given, otherwise from the
        prediction as it stands; from then on they are the user's and survive every merge.
        """
        self._mark(axis, index, labels)
        self._autosave()

    def _mark(self, axis: int, index: int, labels: np.ndarray | None = None) -> None:
        axis, index = self._check_slice(axis, index)
        sl = slice_index(self.image.ndim, axis, index)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != self.prediction[sl].shape:
                raise LabelShapeError(f"slice labels have shape {labels.shape}, the slice is "
                                      f"{self.prediction[sl].shape}")
            self._check_label_values(labels, "slice labels")
            self.prediction[sl] = labels
        # a labelled slice is labelled everywhere: what the user did not paint on it (a new
        # model's empty prediction) is background
        view = self.prediction[sl]
        view[view == NOT_ANNOTATED] = 0
        self.user_labels[sl] = view
        self.labelled[axis].add(index)
        self._dirty |= {"json", "user_labels", "prediction"}

    def tag_slice(self, index: int, tag: int | None) -> None:
        """Tag slice ``index`` (axis 0) 1 = contains the structure, 0 = does not; None untags."""
        _, index = self._check_slice(0, index)
        if tag is None:
            self.tags.pop(index, None)
        elif tag in (0, 1):
            self.tags[index] = int(tag)
        else:
            raise SessionError(f"a tag is 0 or 1, not {tag!r}")
        self._dirty.add("json")
        self._autosave()

    def tag_array(self) -> np.ndarray:
        """Per-slice tags along axis 0: int8 1 / 0 / -1 (untagged)."""
        out = np.full(self.image.shape[0], -1, dtype=np.int8)
        for i, t in self.tags.items():
            out[i] = t
        return out

    def accept_slice(self, axis: int, index: int) -> None:
        """The user says this slice is right as it stands: it becomes a labelled slice."""
        self.mark_labelled(axis, index)

    def unmark_labelled(self, axis: int, index: int) -> None:
        """Forget that a slice was labelled; its voxels go back to the model's care."""
        axis, index = self._check_slice(axis, index)
        if index not in self.labelled[axis]:
            return
        self.labelled[axis].discard(index)
        keep = self.labelled_mask()
        sl = slice_index(self.image.ndim, axis, index)
        self.user_labels[sl] = np.where(keep[sl], self.user_labels[sl], NOT_ANNOTATED)
        self._dirty |= {"json", "user_labels"}
        self._autosave()

    def detect_painted_slices(
        self,
        old: np.ndarray | None = None,
        new: np.ndarray | None = None,
        *,
        indices: Sequence[np.ndarray] | Iterable[Any] | None = None,
        axis: int | None = None,
    ) -> list[int]:
        """Find the slices along ``axis`` that the user painted, and mark them labelled.

        Either compare ``old`` and ``new`` label volumes (``new`` becomes the prediction on the
        changed slices), or pass ``indices``: the voxel coordinates a napari paint event reports,
        as a tuple of per-axis index arrays or napari's list of ``(indices, old_values)`` atoms.
        Returns the sorted slice indices that changed.
        """
        axis = self.settings.axis if axis is None else axis
        if indices is not None:
            changed = sorted(self._slices_from_indices(indices, axis))
            top = self._apply_paint(indices)
            if top is not None:  # a value without a name is a new structure: name it
                self.name_new_label(top)
            for i in changed:
                self._mark(axis, i)
            self._autosave()
            return changed
        if old is None or new is None:
            raise ValueError("give old and new label volumes, or the painted indices")
        old = self._check_fits(old, "labels before painting")
        new = self._check_fits(new, "labels after painting")
        other = tuple(a for a in range(new.ndim) if a != axis)
        changed = [int(i) for i in np.flatnonzero((old != new).any(axis=other))]
        for i in changed:
            self._mark(axis, i, new[slice_index(new.ndim, axis, i)])
        self._autosave()
        return changed

    def _apply_paint(self, value: Any) -> int | None:
        """Write the new values a napari paint event carries into ``prediction``; returns the
        largest value painted (None when the event carries none).

        napari emits the event before it writes a programmatic edit (paint, fill, polygon) to
        the array, so the values are taken from the event itself; napari then writes the same
        values. Plain coordinate tuples carry no values and change nothing.
        """
        if hasattr(value, "slice_key"):  # masked atom: bounding box, changed pixels, new label
            box = tuple(value.slice_key)
            if value.mask is None:
                self.prediction[box] = value.new_value
            else:
                region = self.prediction[box]  # basic slicing: a view, edited in place
                region[value.mask] = value.new_value
            return int(np.max(value.new_value))
        if isinstance(value, list):
            painted = [v for v in (self._apply_paint(atom) for atom in value) if v is not None]
            return max(painted) if painted else None
        if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], tuple):
            self.prediction[value[0]] = value[2]  # (indices, old values, new values)
            return int(np.max(value[2])) if np.size(value[2]) else None
        return None

    def _slices_from_indices(self, value: Any, axis: int) -> set[int]:
        """Slice indices along ``axis`` touched by a napari paint event value (or part of it)."""
        self._check_slice(axis, 0)
        n = self.image.shape[axis]
        if hasattr(value, "slice_key"):  # napari >= 0.6 masked atom: a bounding box (+ mask)
            box = value.slice_key[axis]
            start = box.start or 0
            mask = getattr(value, "mask", None)
            if mask is not None and mask.ndim == len(value.slice_key):
                other = tuple(a for a in range(mask.ndim) if a != axis)
                hits = np.flatnonzero(mask.any(axis=other)) + start
            else:
                hits = np.arange(start, n if box.stop is None else box.stop)
            return {int(i) for i in hits if 0 <= i < n}
        if isinstance(value, list):  # one history item: a list of atoms
            out: set[int] = set()
            for atom in value:
                out |= self._slices_from_indices(atom, axis)
            return out
        if isinstance(value, tuple) and value and isinstance(value[0], tuple):
            return self._slices_from_indices(value[0], axis)  # (indices, old[, new]) atom
        coords = tuple(value)
        if len(coords) != self.image.ndim:
            raise ValueError(f"painted indices have {len(coords)} axes, the scan has "
                             f"{self.image.ndim}")
        c = coords[axis]
        if isinstance(c, slice):
            found = range(*c.indices(n))
        else:
            found = np.unique(np.asarray(c)).tolist()
        return {int(i) for i in found if 0 <= int(i) < n}

    def sync_user_labels(self) -> bool:
        """Take the labelled slices' voxels from ``prediction`` as the user's.

        The napari layer shares ``prediction``; napari's undo changes it without a paint event.
        Labelled slices are only ever written by the user (merges skip them), so what
        ``prediction`` holds there is the user's latest word. Returns True if anything changed.
        """
        mask = self.labelled_mask()
        if not mask.any():
            return False
        differs = mask & (self.user_labels != self.prediction)
        if not differs.any():
            return False
        self.user_labels[differs] = self.prediction[differs]
        self._dirty |= {"user_labels"}
        self._autosave()
        return True

    def record_stroke(self, axis: int, index: int) -> None:
        """A labelled slice was painted again: take its current voxels as the user's."""
        self.mark_labelled(axis, index)

    # ----- prediction ---------------------------------------------------------------------------

    def merge_prediction(
        self, new_prediction: np.ndarray, uncertainty: np.ndarray | None = None
    ) -> np.ndarray:
        """Take a model's prediction everywhere except on labelled slices (kept bit for bit).

        Updates ``prediction`` in place and returns it.
        """
        new_prediction = self._check_fits(new_prediction, "new prediction")
        self._check_label_values(new_prediction, "new prediction")
        if uncertainty is not None:  # checked before anything changes: all or nothing
            uncertainty = self._checked_uncertainty(uncertainty)
        self.sync_user_labels()  # an undo may have changed a labelled slice since
        mask = self.labelled_mask()
        np.copyto(self.prediction, new_prediction, casting="unsafe", where=~mask)
        np.copyto(self.prediction, self.user_labels, where=mask)
        if uncertainty is not None:
            self.set_uncertainty(uncertainty, save=False)
        self._dirty |= {"prediction"}
        self._autosave()
        return self.prediction

    def _checked_uncertainty(self, uncertainty: np.ndarray) -> np.ndarray:
        unc = self._check_fits(uncertainty, "uncertainty")
        if not np.issubdtype(unc.dtype, np.floating) or not np.isfinite(unc).all():
            raise LabelShapeError(f"uncertainty must be finite numbers, found {unc.dtype} "
                                  f"with NaN/Inf or of another kind")
        return unc.astype(np.float32, copy=False)

    def set_uncertainty(self, uncertainty: np.ndarray, save: bool = True) -> None:
        self.uncertainty = self._checked_uncertainty(uncertainty)
        self._dirty |= {"uncertainty"}
        if save:
            self._autosave()

    def preview_prediction(self, prediction: np.ndarray) -> np.ndarray:
        """Show a mid-training prediction; :meth:`restore_prediction` undoes it."""
        if self._before_preview is None:
            self._before_preview = self.prediction.copy()
        return self.merge_prediction(prediction)

    def restore_prediction(self) -> np.ndarray:
        """Back to the prediction from before any preview (after a cancel, crash or reject).

        Labelled slices keep the user's voxels, including strokes made during the preview.
        """
        if self._before_preview is not None:
            before, self._before_preview = self._before_preview, None
            self.merge_prediction(before)
        return self.prediction

    def ranked_uncertain_slices(self, axis: int | None = None) -> list[tuple[int, float]]:
        """Unlabelled slices along ``axis``: those showing the structure first, by decreasing
        uncertainty near it, then the others (:func:`training.loop.rank_uncertain_slices`)."""
        axis = self.settings.axis if axis is None else axis
        if self.uncertainty is None:
            raise SessionError("no uncertainty map yet: run Predict first")
        return rank_uncertain_slices(self.uncertainty, sorted(self.labelled[axis]), axis,
                                     prediction=self.prediction, coverage=SUGGEST_COVERAGE,
                                     per_slice=SUGGEST_PER_SLICE,
                                     main_structure=SUGGEST_MAIN_STRUCTURE,
                                     start_at_body=SUGGEST_BODY_FIRST)

    def starting_slice(self, axis: int | None = None) -> int | None:
        """The slice a scan with nothing painted along ``axis`` starts with (its largest
        predicted section, ranked first by :meth:`ranked_uncertain_slices`); None once a slice
        is painted, or when nothing is predicted."""
        axis = self.settings.axis if axis is None else axis
        if not SUGGEST_BODY_FIRST or self.labelled.get(axis) or self.prediction is None:
            return None
        return largest_section(self.prediction, axis)

    def next_uncertain_slice(self, axis: int | None = None) -> int | None:
        ranked = self.ranked_uncertain_slices(axis)
        return ranked[0][0] if ranked else None

    # ----- training inputs ----------------------------------------------------------------------

    def training_labels(self, slices: Iterable[Slice] | None = None) -> np.ndarray:
        """A label volume for training: the user's voxels on labelled slices, 255 elsewhere.

        ``slices`` restricts it to some ``(axis, index)`` pairs (e.g. without held-back ones).
        """
        if self.n_labelled == 0:
            raise NoLabelledSlicesError(
                "no labelled slice yet: paint or accept at least one slice before retraining")
        self.sync_user_labels()
        if slices is None:
            return self.user_labels.copy()
        out = np.full(self.image.shape, NOT_ANNOTATED, dtype=np.uint8)
        for axis, i in slices:
            if i not in self.labelled.get(axis, ()):
                raise SessionError(f"slice {i} on axis {axis} is not labelled")
            sl = slice_index(out.ndim, axis, i)
            out[sl] = self.user_labels[sl]
        return out

    def held_back_split(self, seed: int | None = None) -> tuple[list[Slice], list[Slice]]:
        """(train, held back) labelled slices; the held-back ones judge a retrain."""
        if self.n_labelled == 0:
            raise NoLabelledSlicesError(
                "no labelled slice yet: paint or accept at least one slice before retraining")
        from training.new_model import is_untrained

        if is_untrained(self.current_model_path) or not self.settings.judge_retrains:
            # nothing to protect yet (an untrained model cannot get worse), or a model taught
            # from scratch: every painted slice trains it
            return list(self.labelled_slices()), []
        seed = self.settings.seed if seed is None else seed
        return split_held_back(self.labelled_slices(), self.settings.held_back_fraction, seed)

    # ----- model versions -----------------------------------------------------------------------

    def version(self, version_id: str) -> ModelVersion:
        for v in self.versions:
            if v.id == version_id:
                return v
        raise SessionError(f"no model version {version_id!r}; known: "
                           f"{', '.join(v.id for v in self.versions) or 'none'}")

    @property
    def current_version(self) -> ModelVersion | None:
        return self.version(self.current) if self.current else None

    @property
    def current_model_path(self) -> str | None:
        v = self.current_version
        return None if v is None else self.model_file(v)

    def model_file(self, version: ModelVersion) -> str:
        """Absolute path of a version's checkpoint (stored relative to the session folder)."""
        p = Path(version.path)
        if not p.is_absolute() and self.folder is not None:
            p = self.folder / p
        return str(p)

    def _next_id(self) -> str:
        n = 0
        for v in self.versions:
            if v.id.startswith("v") and v.id[1:].isdigit():
                n = max(n, int(v.id[1:]) + 1)
        return f"v{n}"

    def add_version(
        self,
        path: str | os.PathLike,
        parent: str | None = None,
        method: str | None = None,
        steps: int = 0,
        score: float | None = None,
        parent_score: float | None = None,
        adopted: bool = True,
        note: str = "",
        make_current: bool | None = None,
    ) -> ModelVersion:
        """List a checkpoint as a new version (copied into the session folder, if any).

        It becomes current when ``make_current`` (default: when ``adopted``).
        """
        src = Path(path)
        if not src.is_file():
            raise SessionError(f"model checkpoint not found: {src}")
        if parent is not None:
            self.version(parent)
        v = ModelVersion(id=self._next_id(), path=str(src.resolve()), parent=parent,
                         method=method, steps=int(steps), score=score,
                         parent_score=parent_score, adopted=adopted, note=note)
        if self.folder is not None:
            v.path = self._store_model(src, v.id, self.folder)
        self.versions.append(v)
        if adopted if make_current is None else make_current:
            self.current = v.id
        self._dirty.add("json")
        self._autosave()
        return v

    @staticmethod
    def _store_model(src: Path, version_id: str, folder: Path) -> str:
        rel = Path(MODELS_DIR) / f"{version_id}.pt"
        dst = folder / rel
        if src.resolve() != dst.resolve():
            _atomic_copy(src, dst)
        return rel.as_posix()

    def use_version(self, version_id: str) -> ModelVersion:
        """Make an earlier (or a rejected) version current: the rollback."""
        v = self.version(version_id)
        if not Path(self.model_file(v)).is_file():
            raise SessionError(f"the checkpoint of version {v.id} is missing: {self.model_file(v)}")
        self.current = v.id
        self._dirty.add("json")
        self._autosave()
        return v

    def adopt_or_reject(
        self,
        path: str | os.PathLike,
        old_scores: Any,
        new_scores: Any,
        *,
        parent: str | None = None,
        method: str | None = None,
        steps: int = 0,
        tolerance: float | None = None,
    ) -> tuple[ModelVersion, bool, str]:
        """List a retrained model, making it current only if it did not get worse on the
        held-back labelled slices. Returns (version, adopted, reason for the user)."""
        tol = self.settings.tolerance if tolerance is None else tolerance
        ok, reason = accept_retrain(old_scores, new_scores, tol)
        v = self.add_version(
            path, parent=parent if parent is not None else self.current, method=method,
            steps=steps, score=mean_score(new_scores), parent_score=mean_score(old_scores),
            adopted=ok, note=reason,
        )
        return v, ok, reason

    def apply_retrain_result(self, event: dict) -> tuple[ModelVersion, bool, str]:
        """Apply the bridge's ``done`` event: list the version, then refresh or restore.

        Adopted: the new prediction replaces the old one off the labelled slices. Rejected: the
        prediction from before any mid-training preview comes back.
        """
        pred = unc = None
        if event.get("prediction"):  # read and check first: a bad result changes nothing
            pred = self._check_fits(np.load(event["prediction"], allow_pickle=False),
                                    "new prediction")
            self._check_label_values(pred, "new prediction")
            if event.get("uncertainty"):
                unc = self._checked_uncertainty(np.load(event["uncertainty"],
                                                        allow_pickle=False))
        v, ok, reason = self.adopt_or_reject(
            event["checkpoint"], event.get("old_scores"), event.get("new_scores"),
            parent=event.get("parent"), method=event.get("method"),
            steps=int(event.get("steps") or 0),
        )
        if ok and pred is not None:
            self.merge_prediction(pred, unc)
            self._before_preview = None
        else:
            self.restore_prediction()
        return v, ok, reason

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
        else:
            image = read_volume(folder / IMAGE_FILE, as_labels=False).data
        if image.ndim == 2:
            image = image[None]
        if list(image.shape) != rec.shape:
            raise LabelShapeError(f"the scan {image_path} now has shape {image.shape}, the "
                                  f"session was made on {tuple(rec.shape)}")
        s = cls.__new__(cls)
        s.image = image
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

"""The interactive loop's state, Qt-free: scan, prediction, labelled slices, model versions.

The dock widget binds this object to napari layers; everything that decides something lives here
so it can be tested without a display. Two invariants:

- the voxels of a labelled slice (painted or accepted by the user) are kept in ``user_labels`` and
  no model output ever overwrites them (:meth:`Session.merge_prediction`);
- every change is autosaved atomically to the session folder, so a crash loses no stroke.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_semiseg.io import (
    NOT_ANNOTATED,
    Geometry,
    LabelShapeError,
    check_labels_fit,
    read_volume,
)
from napari_semiseg.paint_events import apply_paint, painted_slices
from napari_semiseg.session_files import (
    SessionError,
    SessionFiles,
    default_folder,
    grey_scan,
    scan_channels,
)
from training import IGNORE_INDEX
from training.interactive.loop import (
    SUGGEST_BODY_FIRST,
    SUGGEST_COVERAGE,
    SUGGEST_MAIN_STRUCTURE,
    SUGGEST_PER_SLICE,
    SUGGEST_SPREAD_UNTIL,
    NoLabelledSlicesError,
    gaps_between,
    largest_section,
    limit_to_extent,
    rank_uncertain_slices,
    retrain_extent,
    slice_index,
    split_held_back,
)
from training.interactive.retrain import ACCEPT_TOLERANCE, HELD_BACK_FRACTION

Slice = tuple[int, int]  # (axis, index)

__all__ = [
    "ModelVersion",
    "NoLabelledSlicesError",
    "Session",
    "SessionError",
    "Settings",
    "default_folder",
    "grey_scan",
    "scan_channels",
]


@dataclass
class Settings:
    """What the user chose for retraining; saved with the session."""

    method: str = "mean_teacher"
    steps: int = 50
    axis: int = 0
    held_back_fraction: float = HELD_BACK_FRACTION
    # judge each retrain on held-back painted slices. Off for a model taught from scratch: one
    # held-back slice (often empty) let a collapsed model through, and every slice is needed to
    # learn from (LA train split: final Dice 70 without judging, 35-43 with;
    # benchmarks/results/la_effort_train_holdback*.md)
    judge_retrains: bool = True
    tolerance: float = ACCEPT_TOLERANCE  # Dice a retrain may lose on held-back slices (noise)
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


class Session(SessionFiles):
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
        channels: np.ndarray | None = None,
    ) -> None:
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise SessionError(f"the scan must be 2-D or 3-D, got shape {image.shape}")
        if image.ndim == 2:
            image = image[None]
        self.image = image
        # every channel of an RGB scan (z, y, x, c), for a model that reads them all; the
        # grey ``image`` (its FLAIR channel) is what everything else works on
        self.channels = None if channels is None else np.asarray(channels)
        if self.channels is not None and self.channels.shape[:3] != image.shape:
            raise SessionError(f"the scan's channels {self.channels.shape} do not lie on its "
                               f"grey image {image.shape}")
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
        # what a model last showed, before the user's strokes: how right it was where they
        # painted decides whether a scan needs its ends painted (see model_agreement)
        self.model_prediction: np.ndarray | None = None
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

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, image_path: str | os.PathLike, **kwargs: Any) -> Session:
        """A new session on a scan file (any format :func:`napari_semiseg.io.read_volume` reads)."""
        vol = read_volume(image_path, as_labels=False)
        return cls(grey_scan(vol.data, vol.rgb), vol.geometry, image_path=image_path,
                   channels=scan_channels(vol.data, vol.rgb), **kwargs)

    def model_input(self, channels: int) -> np.ndarray:
        """The scan as a model reading ``channels`` channels takes it: the grey image (z, y, x)
        for 1, the scan's own channels (z, y, x, c) otherwise."""
        if channels == 1:
            return self.image
        have = 1 if self.channels is None else int(self.channels.shape[-1])
        if have != channels:
            raise SessionError(f"this model reads {channels} channels, and this scan has "
                               f"{have}: choose a model made for such scans")
        return self.channels

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
            self._check_slice(axis, 0)
            changed = sorted(painted_slices(indices, axis, self.image.shape))
            top = apply_paint(self.prediction, indices)
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
        self.model_prediction = new_prediction.astype(np.uint8, copy=True)
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

    def ranked_uncertain_slices(self, axis: int | None = None, within_ends: bool = False
                                ) -> list[tuple[int, float]]:
        """Unlabelled slices along ``axis``: those showing the structure first, by decreasing
        uncertainty near it, then the others
        (:func:`training.interactive.loop.rank_uncertain_slices`). ``within_ends``: the outer
        labelled slices are the structure's ends (the dock's "Structure ends at outer painted
        slices"); then only slices between those ends are suggested (once two painted slices
        show the structure, as a Retrain keeps within them), and on a scan that started from
        an untrained New model, the middles of the longest runs between labelled slices come
        first until ``SUGGEST_SPREAD_UNTIL`` slices are labelled (:meth:`gaps_to_fill`)."""
        axis = self.settings.axis if axis is None else axis
        if self.uncertainty is None:
            raise SessionError("no uncertainty map yet: run Predict first")
        def rank(within: tuple[int, int] | None) -> list[tuple[int, float]]:
            return rank_uncertain_slices(self.uncertainty, sorted(self.labelled[axis]), axis,
                                         prediction=self.prediction, coverage=SUGGEST_COVERAGE,
                                         per_slice=SUGGEST_PER_SLICE,
                                         main_structure=SUGGEST_MAIN_STRUCTURE,
                                         start_at_body=SUGGEST_BODY_FIRST,
                                         spread_until=self._spread_until(within_ends),
                                         within=within)

        # the structure ends at the painted ends: nothing beyond is worth a look, unless
        # nothing unlabelled is left between them
        ends = retrain_extent(self.user_labels, axis) if within_ends else None
        return (rank(ends) if ends is not None else []) or rank(None)

    def gaps_to_fill(self, axis: int | None = None, within_ends: bool = False
                     ) -> dict[int, tuple[int, int]]:
        """{slice: the labelled slices either side of it} for the slices that
        :meth:`ranked_uncertain_slices` puts first as the middle of a run between labelled
        slices; empty when it ranks by uncertainty alone."""
        axis = self.settings.axis if axis is None else axis
        labelled = self.labelled.get(axis, ())
        if not 2 <= len(labelled) < self._spread_until(within_ends):
            return {}
        return gaps_between(labelled)

    def starting_slice(self, axis: int | None = None) -> int | None:
        """The slice a scan with nothing painted along ``axis`` starts with (its largest
        predicted section, ranked first by :meth:`ranked_uncertain_slices`); None once a slice
        is painted, or when nothing is predicted."""
        axis = self.settings.axis if axis is None else axis
        if not SUGGEST_BODY_FIRST or self.labelled.get(axis) or self.prediction is None:
            return None
        return largest_section(self.prediction, axis)

    def _spread_until(self, within_ends: bool) -> int:
        return SUGGEST_SPREAD_UNTIL if within_ends and self.started_untrained else 0

    @property
    def started_untrained(self) -> bool:
        """Whether this scan started from an untrained New model: nothing had learnt the
        structure before its slices were painted."""
        from training.interactive.new_model import is_untrained

        first = self.model_file(self.versions[0]) if self.versions else None
        known = getattr(self, "_started_untrained", (None, False))  # a reopened session too
        if known[0] != first:  # the checkpoint is read once per starting model
            known = self._started_untrained = (first, is_untrained(first))
        return known[1]

    def why_suggested(self, ranked: Sequence[tuple[int, float]], axis: int | None = None,
                      within_ends: bool = False) -> list[str]:
        """A reason, in the user's words, for each slice of ``ranked`` (as
        :meth:`ranked_uncertain_slices` returns it). Uncertainty scores are shown as a share
        of the most unsure listed slice's: the raw sums (hundreds near a large section,
        thousandths near a speck) mean nothing to a reader."""
        axis = self.settings.axis if axis is None else axis
        body = self.starting_slice(axis)
        gaps = self.gaps_to_fill(axis, within_ends)

        def structure_on(i: int) -> bool:
            if self.prediction is None:
                return False
            section = np.take(self.prediction, i, axis=axis)
            return bool(((section != 0) & (section != IGNORE_INDEX)).any())

        seen = {i: structure_on(i) for i, _ in ranked}
        scored = [u for i, u in ranked if seen[i] and i != body and i not in gaps]
        top = max(scored, default=0.0)
        why = []
        for i, u in ranked:
            if i == body:
                why.append("the structure's largest section: start here")
            elif i in gaps:
                why.append("halfway between painted slices {} and {}".format(*gaps[i]))
            elif not seen[i]:
                why.append("no structure predicted: check it is empty")
            else:
                share = 100.0 * u / top if top > 0 else 0.0
                why.append("unsure near the structure: "
                           + (f"{share:.0f} %" if share >= 1 else "< 1 %"))
        return why

    def next_uncertain_slice(self, axis: int | None = None, within_ends: bool = False
                             ) -> int | None:
        ranked = self.ranked_uncertain_slices(axis, within_ends)
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

    def model_agreement(self, axis: int, index: int) -> float | None:
        """Dice between what the model last showed on labelled slice ``index`` along ``axis``
        and what the user painted there (:func:`training.interactive.loop.slice_agreement`);
        None before any model's prediction."""
        from training.interactive.loop import slice_agreement

        axis, index = self._check_slice(axis, index)
        if self.model_prediction is None or not self.is_labelled(axis, index):
            return None
        self.sync_user_labels()
        sl = slice_index(self.image.ndim, axis, index)
        return slice_agreement(self.model_prediction[sl], self.user_labels[sl])

    def finished_segmentation(self) -> np.ndarray:
        """The segmentation as the user leaves this scan: their painted slices as painted and
        the prediction they kept elsewhere (255 where nothing was predicted or painted)."""
        self.sync_user_labels()
        return self.prediction.copy()

    def held_back_split(self, seed: int | None = None) -> tuple[list[Slice], list[Slice]]:
        """(train, held back) labelled slices; the held-back ones judge a retrain."""
        if self.n_labelled == 0:
            raise NoLabelledSlicesError(
                "no labelled slice yet: paint or accept at least one slice before retraining")
        from training.interactive.new_model import is_untrained

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

    def use_version(self, version_id: str) -> ModelVersion:
        """Make an earlier (or a rejected) version current: the rollback."""
        v = self.version(version_id)
        if not Path(self.model_file(v)).is_file():
            raise SessionError(f"the checkpoint of version {v.id} is missing: {self.model_file(v)}")
        self.current = v.id
        self._dirty.add("json")
        self._autosave()
        return v

    def add_retrain(
        self,
        path: str | os.PathLike,
        *,
        adopted: bool,
        reason: str,
        score: float | None = None,
        parent_score: float | None = None,
        parent: str | None = None,
        method: str | None = None,
        steps: int = 0,
    ) -> ModelVersion:
        """List a retrained model with the verdict the engine gave it
        (:func:`training.interactive.retrain.judge`); it becomes current only if adopted."""
        return self.add_version(
            path, parent=parent if parent is not None else self.current, method=method,
            steps=steps, score=score, parent_score=parent_score, adopted=adopted, note=reason)

    def apply_retrain_result(self, event: dict) -> tuple[ModelVersion, bool, str]:
        """Apply a Retrain's ``done`` event (:mod:`napari_semiseg.retrain_job`): list the version
        with its verdict, then refresh or restore. Returns (version, adopted, reason).

        Adopted: the new prediction replaces the old one off the labelled slices. Rejected: the
        previous model's prediction as shown with every painted slice
        (``event["kept_prediction"]``) or, without one, the prediction from before any
        mid-training preview comes back, with nothing beyond the
        painted extent when the Retrain was asked to keep within it (``event["extent"]``):
        the user said the structure lies between those slices, whichever model is kept.
        """
        pred, unc = self._read_result(event, "prediction", "uncertainty", "new prediction")
        kept, kept_unc = self._read_result(event, "kept_prediction", "kept_uncertainty",
                                           "kept prediction")
        ok, reason = bool(event["adopted"]), str(event["reason"])
        v = self.add_retrain(
            event["checkpoint"], adopted=ok, reason=reason, score=event.get("new_score"),
            parent_score=event.get("old_score"), parent=event.get("parent"),
            method=event.get("method"), steps=int(event.get("steps") or 0))
        if ok and pred is not None:
            self.merge_prediction(pred, unc)
            self._before_preview = None
        else:
            if kept is not None and not ok:  # the kept model, every painted slice in its blend
                self._before_preview = None
                self.merge_prediction(kept, kept_unc)
            else:
                self.restore_prediction()
            if event.get("extent") is not None:
                self.merge_prediction(limit_to_extent(self.prediction, event["extent"]))
        return v, ok, reason

    def _read_result(self, event: dict, labels_key: str, uncertainty_key: str, what: str
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A Retrain's labels and uncertainty (``.npy`` paths in ``event``), checked against
        this scan before anything changes; (None, None) where the event has none."""
        pred = unc = None
        if event.get(labels_key):
            pred = self._check_fits(np.load(event[labels_key], allow_pickle=False), what)
            self._check_label_values(pred, what)
            if event.get(uncertainty_key):
                unc = self._checked_uncertainty(np.load(event[uncertainty_key],
                                                        allow_pickle=False))
        return pred, unc

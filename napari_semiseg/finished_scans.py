"""Scans the user finished in this dock, kept so that every later Retrain also learns from them.

When the user moves on from a scan they painted and retrained, its whole segmentation (their
painted slices and the prediction they kept) teaches the next scans' Retrains beside that
scan's own slices: a model taught from a few slices per scan otherwise sees only the current
scan's. Measured with ``semiseg benchmark effort --replay finished`` (from scratch, 4 LA train
scans: 20 slices against 21; 5 LGG val patients: 16 against 17; on 10-scan series, where a
model carried without them drifts, 35 against 38 on ACDC test, 39 against 39 on LGG test,
48 against 53 on LA train scans, with 4 kept;
``benchmarks/results/effort_finished_choice.md``); the newest 8 are kept
(``benchmarks/results/finished_kept_choice.md``). The volumes wait on disk, in a folder of
their own, and go to the training process as paths: nothing is read on the Qt thread at
Retrain. Save model copies them beside the saved checkpoint (:func:`companion`), and picking
that model again brings them back.
They are written by a background thread, so that leaving a large scan does not freeze the
window; a Retrain waits for a write still under way, and a write that failed is reported then.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from training.interactive.loop import FINISHED_SCANS_KEPT as MAX_FINISHED


class FinishedScans:
    """Up to ``limit`` finished scans, newest last, as (image, segmentation) ``.npy`` files."""

    def __init__(self, limit: int = MAX_FINISHED, folder: str | os.PathLike | None = None):
        self.limit = int(limit)
        self._own = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="semiseg-finished-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._own:  # the folder goes with the dock, however it closes
            weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        self._entries: list[tuple[str, Path, Path]] = []  # (key, image, segmentation)
        # an entry's write, while under way or unchecked; until it is known to have worked, the
        # scan's earlier entry (same key) stays
        self._writes: dict[tuple[str, Path, Path], Future] = {}
        self._errors: list[str] = []
        self._borrowed: set[Path] = set()  # a saved model's scans: read, never deleted here
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finished-scans")
        self._count = 0
        # slices painted on every scan finished in this series, oldest first (not only the
        # kept ones): what the user sees the learning save
        self._painted: dict[str, int] = {}

    def __len__(self) -> int:
        return len({key for key, *_ in self._entries})

    def add(self, session: Any, channels: int = 1) -> bool:
        """Keep ``session``'s scan (as a model reading ``channels`` channels takes it) and its
        finished segmentation. A scan with nothing painted teaches nothing and is not kept;
        the same scan finished again replaces its earlier entry. Returns whether it was kept."""
        if session.n_labelled == 0:
            return False
        key = session.image_path or f"scan-{id(session)}"
        self._painted[key] = int(session.n_labelled)
        image = session.model_input(channels)
        segmentation = session.finished_segmentation()
        if not (segmentation != 255).any():
            return False
        self._count += 1
        img_path = self.folder / f"scan{self._count}-image.npy"
        seg_path = self.folder / f"scan{self._count}-segmentation.npy"
        entry = (key, img_path, seg_path)
        self._entries.append(entry)
        self._writes[entry] = self._writer.submit(_write, img_path, seg_path, image,
                                                  segmentation)
        while len(self) > self.limit:
            self._drop(self._entries[0][0])
        return True

    def save_to(self, folder: str | os.PathLike) -> int:
        """Copy the kept scans to ``folder`` (beside a saved model: see :func:`companion`),
        replacing what it held; returns how many. Written aside, then moved into place."""
        self._settle()
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".writing")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        listing = []
        try:
            for k, (key, img, seg) in enumerate(self._entries, 1):
                names = (f"scan{k}-image.npy", f"scan{k}-segmentation.npy")
                for src, name in zip((img, seg), names, strict=True):
                    shutil.copyfile(src, tmp / name)
                listing.append({"scan": key, "image": names[0], "segmentation": names[1]})
            (tmp / LISTING).write_text(json.dumps(listing, indent=1))
            (tmp / PAINTED).write_text(json.dumps(
                [{"scan": k, "painted": n} for k, n in self._painted.items()], indent=1))
            old = folder.with_name(folder.name + ".old")
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # from now on the saved copies are read (the files an earlier adopt pointed to may
        # have been replaced), and the temporary ones go
        for entry in list(self._entries):
            self._remove(entry)
        self._borrowed.clear()
        return self.adopt(folder)

    def adopt(self, folder: str | os.PathLike) -> int:
        """Take on the scans a saved model learnt from (written by :meth:`save_to`), newest
        last, as if finished here; their files are read where they are and never deleted.
        Returns how many; a folder that is missing or unreadable adds none."""
        folder = Path(folder)
        try:
            listing = json.loads((folder / LISTING).read_text())
        except (OSError, ValueError):
            return 0
        self._adopt_painted(folder)
        added = 0
        for item in listing[-self.limit:]:
            try:
                key = str(item["scan"])
                img, seg = folder / item["image"], folder / item["segmentation"]
            except (KeyError, TypeError):
                continue
            if not (img.is_file() and seg.is_file()):
                continue
            self._drop(key)
            self._entries.append((key, img, seg))
            self._borrowed.update((img, seg))
            added += 1
        while len(self) > self.limit:
            self._drop(self._entries[0][0])
        return added

    def _adopt_painted(self, folder: Path) -> None:
        try:  # a model saved before the count was kept has none: the series goes on without
            painted = json.loads((folder / PAINTED).read_text())
            counts = [(str(item["scan"]), int(item["painted"])) for item in painted]
        except (OSError, ValueError, KeyError, TypeError):
            return
        for key, n in counts:
            self._painted.pop(key, None)
            self._painted[key] = n

    def painted_per_scan(self, exclude: str | None = None) -> list[int]:
        """Slices painted on each scan finished in this series, oldest first, without the
        scan ``exclude`` names (the one on screen)."""
        return [n for key, n in self._painted.items() if key != exclude]

    def take_errors(self) -> list[str]:
        """Why scans were not kept after all (e.g. a full disk), once each: waits for the
        writes under way."""
        self._settle()
        errors, self._errors = self._errors, []
        return errors

    def files(self, exclude: str | None = None) -> list[tuple[str, str]]:
        """(image, segmentation) paths, oldest first, without the scan ``exclude`` names (the
        one being worked on: its own slices teach it). Waits for the writes under way."""
        self._settle()
        return [(str(i), str(s)) for k, i, s in self._entries if k != exclude]

    def clear(self) -> None:
        """Forget every scan (the user chose another model: earlier learning is not carried)."""
        for key, *_ in list(self._entries):
            self._drop(key)
        self._painted.clear()

    def close(self) -> None:
        self.clear()
        self._writer.shutdown(wait=True)
        if self._own:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _settle(self) -> None:
        """Wait for every write. A written scan replaces its earlier entry; one whose write
        failed is forgotten (the earlier entry stays), and why is kept for take_errors."""
        for entry, write in list(self._writes.items()):
            error = write.exception()
            del self._writes[entry]
            if entry not in self._entries:
                continue
            if error is not None:
                self._errors.append(f"{Path(entry[0]).name}: {error}")
                self._remove(entry)
            else:  # the entries before it go: a later finish of the same scan, still
                # being written, is newer and stays
                before = self._entries[:self._entries.index(entry)]
                for older in [e for e in before if e[0] == entry[0]]:
                    self._remove(older)

    def _drop(self, key: str) -> None:
        for entry in [e for e in self._entries if e[0] == key]:
            write = self._writes.pop(entry, None)
            if write is not None:
                write.exception()  # its files go below, whether the write failed or not
            self._remove(entry)

    def _remove(self, entry: tuple[str, Path, Path]) -> None:
        self._entries.remove(entry)
        for path in entry[1:]:
            if path not in self._borrowed:
                path.unlink(missing_ok=True)


LISTING = "scans.json"
PAINTED = "painted.json"  # slices painted per finished scan, every one of the series


def companion(model_path: str | os.PathLike) -> Path:
    """Where a saved model's finished scans lie: ``liver.pt`` -> ``liver.finished``."""
    return Path(model_path).with_suffix(".finished")


def _write(img_path: Path, seg_path: Path, image: np.ndarray, segmentation: np.ndarray) -> None:
    try:
        np.save(img_path, np.asarray(image))
        np.save(seg_path, segmentation)
    except BaseException:  # e.g. a full disk: no half-written scan stays behind
        img_path.unlink(missing_ok=True)
        seg_path.unlink(missing_ok=True)
        raise

"""The scans a learnt model was taught on, kept so that Retrain on the next scan also trains on
their painted slices: the model then learns across scans instead of forgetting the last one.

Plain Python, no Qt: the dock remembers a scan when one of its Retrains is adopted, and hands
the others to the next Retrain (``training.loop.finetune(other_labelled=...)``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from training import IGNORE_INDEX

MAX_TAUGHT = 8  # scans kept; the oldest goes first (memory, and each weighs in every batch)


class TaughtScans:
    def __init__(self, limit: int = MAX_TAUGHT) -> None:
        self.limit = limit
        self._scans: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def remember(self, key: str, image: np.ndarray, labels: np.ndarray) -> None:
        """Keep (a copy of) the painted slices of scan ``key``; 255 = not painted."""
        labels = np.asarray(labels)
        if labels.shape != np.shape(image):
            raise ValueError(f"labels {labels.shape} do not match the scan {np.shape(image)}")
        if not (labels != IGNORE_INDEX).any():
            return
        self._scans.pop(key, None)
        self._scans[key] = (image, labels.copy())
        while len(self._scans) > self.limit:
            self._scans.popitem(last=False)

    def others(self, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every remembered scan but ``key`` (the one being retrained brings its own slices)."""
        return [pair for k, pair in self._scans.items() if k != key]

    def clear(self) -> None:
        self._scans.clear()

    def __len__(self) -> int:
        return len(self._scans)

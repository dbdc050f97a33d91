"""Training between scans: the carried model learns more from the scans the user finished.

A New model's network learns a later scan's structure only from its Retrains (200 steps each);
a scan finished after one or two Retrains leaves a network that has trained a few hundred
steps in all, and the next scan's first Predict shows it (ACDC val, the same patient's second
frame: Dice 14.6, RV not found). While the user opens the next scan, the dock trains it
:data:`TRAIN_BETWEEN_SCANS_STEPS` more steps on the finished segmentations (the painted slices
and the prediction kept between them), the scan just left first. The effort benchmark's
``--consolidate`` calls the same :func:`train_between_scans`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .loop import Event, finetune

#: Steps trained between two scans of a New model's series. Chosen by a rule written before
#: the runs, from a random start: ACDC val 10 scans 35 slices against 40 (none worse), LA train
#: 4 scans 17 against 24, LGG val 5 patients 16 against 16; 28-102 s per scan on 2 cores
#: (benchmarks/results/effort_consolidate_choice.md).
TRAIN_BETWEEN_SCANS_STEPS = 1000


def train_between_scans(
    model_path: str | Path,
    finished: Sequence[tuple[np.ndarray, np.ndarray]],
    out_path: str | Path,
    steps: int = TRAIN_BETWEEN_SCANS_STEPS,
    *,
    method: str = "supervised",
    seed: int = 0,
    device: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **config: Any,
) -> str | None:
    """Train ``model_path`` ``steps`` steps on ``finished`` (image, segmentation) pairs, oldest
    first, 255 where nothing is known; the last one is the scan just left. Returns the new
    checkpoint's path: on a stop, the model trained so far; ``None`` if stopped before any
    step. Raises ``ValueError`` when there is nothing finished to learn from."""
    if not finished:
        raise ValueError("no finished scan to learn from")
    *earlier, (image, segmentation) = finished
    return finetune(model_path, image, segmentation, method=method, steps=int(steps),
                    out_path=out_path, seed=seed, device=device, on_event=on_event,
                    should_stop=should_stop, other_labelled=earlier, **config)

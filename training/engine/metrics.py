"""Dice and HD95, with one rule for empty structures used by every score in the project.

The rule (:func:`dice`): a class absent from both prediction and reference is not scored (NaN,
left out of every mean); a class present in only one of them scores Dice 0 (and HD95 the volume
diagonal, the worst case, in spacing units). Reference voxels labelled 255 (not annotated) are
excluded from both. Which classes are scored at all is :func:`classes_to_score`: every class in
the prediction or the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from training import IGNORE_INDEX


def classes_to_score(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int | None = None
) -> int:
    """The class count C to score (prediction, reference) pairs with: classes 1..C-1.

    The rule shared by ``semiseg evaluate``, the benchmarks and model cards: every class that
    appears in **either** the prediction or the reference, on annotated voxels (reference not
    255), is scored, together with classes 1..``num_classes``-1 when a count is given (say by
    the model's card). Counting the references alone would leave a class found only in the
    prediction unscored, and a model that paints a structure that is not there would get an
    inflated mean Dice; under this rule that class scores Dice 0. 255 in a prediction is no
    class. At least 2 (background and one structure).
    """
    top = 0
    for pred, ref in pairs:
        pred, ref = np.asarray(pred), np.asarray(ref)
        annotated = ref != IGNORE_INDEX
        for a in (ref[annotated], pred[annotated & (pred != IGNORE_INDEX)]):
            if a.size:
                top = max(top, int(a.max()))
    return max(2, int(num_classes or 0), top + 1)


def _one_hot(a: np.ndarray, c: int) -> torch.Tensor:
    return torch.from_numpy((a == c).astype(np.float32))[None, None]


def dice_hd95(
    pred: np.ndarray,
    reference: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> dict[str, list[float]]:
    """Dice and HD95 for classes 1..C-1 of one (z, y, x) (or 2D) label volume pair; NaN for a
    class that is not scored (:func:`dice`)."""
    pred = np.asarray(pred)
    ref = np.asarray(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    ignore = ref == IGNORE_INDEX
    if ignore.any():
        pred = np.where(ignore, 0, pred)
        ref = np.where(ignore, 0, ref)
    sp = list(spacing) if spacing is not None else [1.0] * ref.ndim
    diagonal = float(np.sqrt(sum((s * n) ** 2 for s, n in zip(sp, ref.shape, strict=True))))
    dices, hds = [], []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        dices.append(dice(p, r))
        if not (p.any() and r.any()):  # not scored, or found in only one: no distance
            hds.append(float("nan") if np.isnan(dices[-1]) else diagonal)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            hd = compute_hausdorff_distance(_one_hot(pred, c), _one_hot(ref, c),
                                            include_background=True, percentile=95,
                                            spacing=sp)
        hds.append(float(hd.item()))
    return {"dice": dices, "hd95": hds}


def mean_over_cases(per_case: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Class-wise mean of :func:`dice_hd95` results over cases; NaN (not scored) is left out,
    and a class scored in no case stays NaN."""
    if not per_case:
        return {"dice": [], "hd95": []}
    out = {}
    for k in ("dice", "hd95"):
        a = np.array([r[k] for r in per_case], dtype=np.float64)
        n = np.sum(~np.isnan(a), axis=0)
        out[k] = np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), np.nan).tolist()
    return out


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks: NaN (not scored) when both are empty, 0 when only one is.

    The project's one rule for empty structures: "nothing there, nothing found" is neither a
    success (1) nor a failure (0), so it is left out of every mean.
    """
    p, r = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = int(p.sum()) + int(r.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(p, r).sum()) / total


def mean_dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Mean :func:`dice` over the structures (values other than 0 and 255) found in either
    label array, on the voxels the reference annotates (not 255); NaN when none is found."""
    pred, ref = np.asarray(prediction), np.asarray(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    annotated = ref != IGNORE_INDEX
    pred, ref = pred[annotated], ref[annotated]
    found = (set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())) - {0, IGNORE_INDEX}
    scores = [dice(pred == c, ref == c) for c in sorted(found)]
    return float(np.mean(scores)) if scores else float("nan")

"""One Retrain, as the dock runs it and every benchmark measures it.

The plugin's training process (``napari_semiseg.retrain_job``), ``semiseg simulate`` and
``semiseg benchmark effort`` all call :func:`retrain_once`: fine-tune on the painted slices,
predict the scan as the dock shows it, and judge the new model on the held-back painted slices
(:func:`judge`). The product's defaults live here, once. No Qt, no napari; light to import
(torch loads when a Retrain runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training import IGNORE_INDEX
from training.interactive.loop import KEEP_MAIN_PIECE, finetune, slice_index

Event = dict[str, Any]

# Keep the current model's confident voxels off the corrected slices as pseudo-labels: without
# them one corrected empty slice dragged ACDC Dice from 0.81 to 0.59 (benchmarks/results/
# acdc_simulate.md); with them it rose to 0.83.
ANCHOR_CONFIDENCE = 0.9
#: Dice a Retrain may lose on the held-back painted slices and still be adopted (noise).
ACCEPT_TOLERANCE = 0.01
#: The share of the painted slices held back to judge a Retrain.
HELD_BACK_FRACTION = 0.25
# A model taught from scratch trains on the interpolation between the painted slices too, and
# its prediction is blended with it (network share 0.3): chosen on 4 LA train scans at K = 5,
# 80.7 Dice against 76.9 without (benchmarks/results/la_new_structure_k5_train.md)
SHAPE_PRIOR_WEIGHT = 0.3


# ----- the judgement -----------------------------------------------------------------------------


def score_slices(prediction: np.ndarray, reference: np.ndarray, slices: Iterable[Any],
                 axis: int = 0) -> dict[Any, float]:
    """Dice per slice, ``{slice: dice}`` (:func:`training.engine.metrics.mean_dice`; NaN where the
    slice shows no structure in either). Slices are indices along ``axis`` or (axis, index)."""
    from training.engine.metrics import mean_dice  # torch and MONAI: not for the session's import

    out: dict[Any, float] = {}
    for s in slices:
        ax, i = (s if isinstance(s, tuple) else (axis, s))
        sl = slice_index(np.ndim(prediction), ax, int(i))
        out[s] = mean_dice(np.asarray(prediction)[sl], np.asarray(reference)[sl])
    return out


def mean_score(scores: Mapping[Any, float] | None) -> float | None:
    """The mean of the scored slices; None when no slice is scored."""
    values = [v for v in (scores or {}).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class Verdict:
    """Whether a Retrain is adopted, why (for the user), and the Dice it was judged by."""

    adopted: bool
    reason: str
    old_scores: dict = field(default_factory=dict)
    new_scores: dict = field(default_factory=dict)

    @property
    def old_score(self) -> float | None:
        return mean_score(self.old_scores)

    @property
    def new_score(self) -> float | None:
        return mean_score(self.new_scores)


def judge(old_scores: Mapping[Any, float], new_scores: Mapping[Any, float],
          tolerance: float = ACCEPT_TOLERANCE) -> Verdict:
    """Adopt the retrained model unless its mean Dice on the held-back slices fell by more than
    ``tolerance``.

    A slice showing no structure in the reference nor in a model's prediction is not scored for
    that model (:func:`training.engine.metrics.dice`). So when only one model has any slice scored,
    it
    painted a structure on held-back slices the user left empty (Dice 0 there), and the other
    one is the better. With no slice scored for either, there is nothing to judge by."""
    old, new = mean_score(old_scores), mean_score(new_scores)
    scores = {"old_scores": dict(old_scores), "new_scores": dict(new_scores)}
    keeps = "; the previous model stays current"
    if old is None and new is None:
        return Verdict(True, UNJUDGED.reason, **scores)
    if old is None:
        return Verdict(False, "rejected: it paints a structure on held-back labelled slices "
                              f"left empty{keeps}", **scores)
    if new is None:
        return Verdict(True, "adopted: it no longer paints a structure on held-back labelled "
                             "slices left empty", **scores)
    if new + tolerance < old:
        return Verdict(False, f"rejected: Dice on held-back labelled slices fell from {old:.3f} "
                              f"to {new:.3f}{keeps}", **scores)
    return Verdict(True, f"adopted: Dice on held-back labelled slices {old:.3f} -> {new:.3f}",
                   **scores)


#: The verdict of a Retrain with no held-back slice (a model taught from scratch, one slice).
UNJUDGED = Verdict(True, "adopted: no held-back labelled slice to check it against")


def with_held_back(labels: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """``labels`` (the training slices, 255 elsewhere) with the painted voxels of ``reference``
    (the held-back slices, 255 elsewhere) added: every slice the user painted."""
    if reference is None:
        return labels
    reference = np.asarray(reference)
    return np.where(reference != IGNORE_INDEX, reference, labels).astype(np.asarray(labels).dtype)


# ----- one retrain -------------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    """What registration reads: the grey scan, or an RGB scan's FLAIR, whatever the model
    reads."""
    from training.core.io import rgb_to_grey

    return image if np.ndim(image) == 3 else rgb_to_grey(image)


# Which uncertainty ranks the suggestions (and fills the dock's uncertainty layer) where a
# Retrain blends the network with the fill: the "network"'s own; the "shown" blend's entropy;
# or the network's raised to the blend's where the two "disagreement". "shown" was not
# kept: it won on LA and LGG series, 55 slices against 60 (rule written first), then lost on
# ACDC train series, 44 against 42 over two seeds, where its second rule allowed 43. A likely
# cause, not measured: the soft fill's outline band counts as unsure on every slice between
# painted ones. "disagreement" passed its rule but its test series were not all read in the
# same stop (benchmarks/results/uncertainty_of_shown_choice.md).
SUGGEST_FROM = "network"


@dataclass
class Shown:
    """How a model's prediction is shown: blended with the fill between the painted slices
    (``fuse_weight``, the network's share; None = the network alone; ``fill``: the registered
    fill of :mod:`training.interactive.image_priors`, else shape interpolation), only its main
    3-D piece (``main_piece``), nothing beyond ``extent`` (first, last slice along z)."""

    fuse_weight: float | None = None
    fill: np.ndarray | None = None
    extent: Sequence[int] | None = None
    ends: str | None = None
    main_piece: bool = KEEP_MAIN_PIECE
    mc_samples: int = 0
    device: str | None = None
    # the share read off this scan's painted slices (training.interactive.blend_share), with
    # ``fuse_weight`` where there is nothing to read it from
    share_from_painted: bool = False
    # the uncertainty that ranks the suggestions (and the dock shows) with a blend: "network",
    # "shown" (:func:`shape_prior_with_uncertainty`) or "disagreement"
    # (:func:`disagreement_uncertainty`); see SUGGEST_FROM
    suggest_from: str = SUGGEST_FROM
    # the network's share grows from 0 on a painted slice to ``fuse_weight`` midway between two.
    # Not the dock's: it saved slices on LA series and cost more on ACDC train series
    # (benchmarks/results/share_by_gap_choice.md).
    share_by_gap: bool = False

    def network(self, model_path: str | Path, image: np.ndarray) -> dict:
        """The checkpoint's own pass over ``image`` (labels, uncertainty, and probabilities when
        they are to be blended), before anything is drawn from the painted slices."""
        from training.engine.checkpoint import load_checkpoint
        from training.engine.inference import predict_volume

        model, meta = load_checkpoint(model_path, device=self.device)
        return predict_volume(model, meta, image, mc_samples=self.mc_samples, device=self.device,
                              probabilities=self.fuse_weight is not None)

    def show(self, res: dict, labels: np.ndarray) -> np.ndarray:
        """Labels as the dock shows them, from a :meth:`network` pass and the painted ``labels``
        (255 elsewhere) that the shape prior interpolates."""
        from training.interactive.loop import limit_to_extent, shape_prior_prediction

        shown = res["labels"]
        if self.fuse_weight is not None:
            shown = shape_prior_prediction(res["probabilities"], labels, self.fuse_weight,
                                           ends=self.ends, main_piece=self.main_piece,
                                           filled=self.fill, by_gap=self.share_by_gap)
        return limit_to_extent(shown, self.extent)

    def show_with_uncertainty(self, res: dict, labels: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`show`, its uncertainty): the network's, or with a blend, the one
        ``suggest_from`` names."""
        from training.interactive.loop import limit_to_extent, shape_prior_with_uncertainty

        if self.fuse_weight is not None and self.suggest_from == "disagreement":
            from training.interactive.loop import disagreement_uncertainty

            return self.show(res, labels), disagreement_uncertainty(
                res["probabilities"], res["uncertainty"], labels, self.fuse_weight,
                ends=self.ends, filled=self.fill, by_gap=self.share_by_gap)
        if self.fuse_weight is None or self.suggest_from != "shown":
            return self.show(res, labels), res["uncertainty"]
        shown, unc = shape_prior_with_uncertainty(res["probabilities"], labels,
                                                  self.fuse_weight, ends=self.ends,
                                                  main_piece=self.main_piece, filled=self.fill,
                                                  by_gap=self.share_by_gap)
        return limit_to_extent(shown, self.extent), unc

    def predict(self, model_path: str | Path, image: np.ndarray, labels: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(labels as the dock shows them, uncertainty) of the checkpoint on ``image``;
        ``labels`` are the painted slices the shape prior interpolates."""
        return self.show_with_uncertainty(self.network(model_path, image), labels)


@dataclass
class RetrainResult:
    """A finished Retrain: the new checkpoint, its prediction as shown, and the verdict."""

    checkpoint: str
    prediction: np.ndarray
    uncertainty: np.ndarray
    verdict: Verdict
    train_s: float = 0.0
    predict_s: float = 0.0
    # the previous model as shown with every painted slice, held-back ones included: what the
    # user sees when the Retrain is not adopted (None when nothing was held back)
    kept_prediction: np.ndarray | None = None
    kept_uncertainty: np.ndarray | None = None
    # the network's share in what is shown, and the per-slice Dice it was read from
    share: float | None = None
    share_evidence: list = field(default_factory=list)


# Whether the shape prior's pseudo-labels come from the registered fill the Retrain shows
# rather than from shape interpolation. Not adopted: on 4 LA train scans at K = 5 the network
# learnt less from it (67.2 against 72.2 Dice alone; shown within the ends 90.3 against 90.2;
# benchmarks/results/la_new_structure_k5_train_prior_fill.md beside
# la_new_structure_k5_train_unshuffle-2.md).
PRIOR_FROM_FILL = False

Preview = Callable[[np.ndarray, "np.ndarray | None", int, str], None]


def retrain_once(
    model_path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    out_path: str | Path,
    *,
    reference: np.ndarray | None = None,
    held_back: Sequence[Any] = (),
    unlabelled: Sequence[np.ndarray] = (),
    method: str = "mean_teacher",
    steps: int = 50,
    seed: int = 0,
    shown: Shown | None = None,
    anchor: float | None = ANCHOR_CONFIDENCE,
    tolerance: float = ACCEPT_TOLERANCE,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_preview: Preview | None = None,
    preview_every: int = 0,
    first_preview_s: float = 0.0,
    fresh: Sequence[int] = (),
    share_evidence: Sequence[Mapping[float, float]] = (),
    **config: Any,
) -> RetrainResult | None:
    """Fine-tune ``model_path`` on ``labels`` (the training slices, 255 elsewhere), predict
    ``image`` as the dock shows it, and judge the new model against the old on the
    ``held_back`` slices of ``reference`` (the user's labels there, 255 elsewhere).
    ``image`` is what the model reads: the grey scan (z, y, x), or (z, y, x, c) for a model
    that reads c channels.

    Returns None when stopped (``should_stop``) before the end. ``on_event`` gets the
    trainer's progress and checkpoint events. ``on_preview(labels, uncertainty, step, source)``
    gets mid-training predictions: with the shape prior, the interpolation between the
    painted slices carried by registration at once (``source="registration"``, no
    uncertainty; later predictions are fused with it), then one every
    ``preview_every`` steps and one after ``first_preview_s`` seconds of training. Extra keyword
    arguments go to :func:`training.interactive.loop.finetune` (``class_names``, ``prior``, ``lr``,
    ...).

    With ``shown.share_from_painted``, the blend's share is read off ``fresh`` (slices along z
    painted since ``model_path`` was trained, which it never saw) and ``share_evidence`` (what
    earlier Retrains of this scan read): :mod:`training.interactive.blend_share`.
    """
    import torch

    shown = shown or Shown()
    # every painted slice: the held-back ones judge the networks, then count like the others in
    # what the user sees. Left out of the fill, a held-back middle slice left a blend of the
    # two ends' thin sections: Dice 0.29 on an LA scan where the model alone had 0.88.
    held = reference is not None and len(held_back) > 0
    everything = with_held_back(labels, reference) if held else labels
    painted = (np.asarray(labels) != IGNORE_INDEX).any()
    user_shown = shown
    if shown.fuse_weight is not None and shown.fill is None and painted:
        # the painted slices carried through the scan by registration (it beat shape
        # interpolation on 19 of 20 LA train scans at K = 5, benchmarks/results/prior_choice.md):
        # shown at once, and what every later prediction of this Retrain is fused with
        from training.interactive.image_priors import fill_between_slices

        grey = _grey(image)
        shown = replace(shown, fill=fill_between_slices(labels, grey, "register"))
        user_shown = (replace(shown, fill=fill_between_slices(everything, grey, "register"))
                      if held else shown)
    old_scores: dict = {}
    kept = kept_unc = old_res = None
    evidence = list(share_evidence)
    if shown.share_from_painted and shown.fuse_weight is not None and painted:
        from training.interactive.blend_share import choose_share, slices_read
        from training.interactive.new_model import is_untrained

        if fresh and not is_untrained(model_path):  # the parent never saw the fresh slices
            old_res = shown.network(model_path, image)
            evidence += slices_read(old_res["probabilities"], everything, _grey(image), fresh,
                                    ends=shown.ends)
        share = choose_share(evidence, shown.fuse_weight)
        shown, user_shown = (replace(shown, fuse_weight=share),
                             replace(user_shown, fuse_weight=share))
    if held:  # the parent's Dice, for the judgement
        old_res = old_res if old_res is not None else shown.network(model_path, image)
        old_scores = score_slices(shown.show(old_res, labels), reference, held_back)
        kept, kept_unc = user_shown.show_with_uncertainty(old_res, everything)
    state = {"cancelled": False}

    def events(ev: Event) -> None:
        kind = ev.get("type")
        if kind == "cancelled":
            state["cancelled"] = True
        if kind in ("cancelled", "done"):  # the Retrain ends after its judgement, not here
            return
        if on_event is not None:
            on_event(ev)
        if kind == "checkpoint" and ev.get("path") and on_preview is not None:
            # building the network to load it draws from torch's generator: restored after,
            # so the training does not depend on when (after how many steps) a preview came
            with torch.random.fork_rng(devices=[]):
                pred, unc = user_shown.predict(ev["path"], image, everything)
            on_preview(pred, unc, int(ev["step"]), "network")

    if on_preview is not None and user_shown.fill is not None:
        on_preview(user_shown.fill, None, 0, "registration")  # while the network learns
    if on_preview is not None and preview_every and preview_every < steps:
        config.setdefault("checkpoint_every", preview_every)
    if on_preview is not None and first_preview_s:
        config.setdefault("first_checkpoint_s", first_preview_s)
    config.setdefault("prior_ends", shown.ends)
    if PRIOR_FROM_FILL and shown.fill is not None:
        config.setdefault("prior_filled", shown.fill)
    t0 = time.perf_counter()
    ckpt = finetune(model_path, image, labels, list(unlabelled), method=method, steps=steps,
                    out_path=out_path, seed=seed, device=shown.device, on_event=events,
                    should_stop=should_stop, anchor=anchor, **config)
    train_s = time.perf_counter() - t0
    if state["cancelled"] or ckpt is None or (should_stop is not None and should_stop()):
        return None
    t1 = time.perf_counter()
    res = shown.network(ckpt, image)
    new, uncertainty = user_shown.show_with_uncertainty(res, everything)
    predict_s = time.perf_counter() - t1
    verdict = (judge(old_scores, score_slices(shown.show(res, labels), reference, held_back),
                     tolerance)
               if old_scores else UNJUDGED)
    return RetrainResult(ckpt, new, uncertainty, verdict, train_s, predict_s, kept, kept_unc,
                         shown.fuse_weight, evidence)

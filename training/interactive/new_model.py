"""A model for a structure no model knows yet: named by the user, trained from their slices.

:func:`new_model` writes an untrained checkpoint with the user's class names. Retrain then
fine-tunes it like any other model (the loop is the same); its ``untrained`` flag tells the loop
not to trust its predictions as anchors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from training.engine.checkpoint import save_checkpoint
from training.engine.normalization import DEFAULT_NORMALIZATION

# Small enough that the first retrain on 2 CPU cores refreshes the prediction within ~30 s.
# unshuffle 2 runs it at half resolution: 200 steps took 24-33 s instead of 57-66 s on LA train
# scans at K = 5, and what the dock shows (fused with the registered fill, within the painted
# extent) scored 90.2 against 90.6 (benchmarks/results/la_new_structure_k5_train_unshuffle-2.md
# beside la_new_structure_k5_recipe_train.md; base 12 at 160 px: 90.2 in ~60 s).
NEW_MODEL_NETWORK = {"base": 8, "depth": 4, "dropout": 0.1, "norm": "group", "unshuffle": 2}
NEW_MODEL_SIZE = [128, 128]
# Patch windows: on 4 LA train scans, K = 5, the raw network scored 78.5 against 72.2 with
# slices up to 1.6x the patch whole, the fused result shown 90.3 against 90.2, Retrain time
# alike (benchmarks/results/la_new_structure_k5_train_window_*.md)
NEW_MODEL_WHOLE_SLICE_UP_TO = 1.0
# What a New model reads of a scan with several channels (the LGG PNGs' pre-contrast, FLAIR
# and post-contrast): "grey" its grey channel (FLAIR), "all" every channel.
NEW_MODEL_CHANNELS = "grey"


def new_model(
    path: str | os.PathLike,
    class_names: Sequence[str],
    size: Sequence[int] = NEW_MODEL_SIZE,
    seed: int = 0,
    pretrained: str | os.PathLike | None = None,
    whole_slice_up_to: float = NEW_MODEL_WHOLE_SLICE_UP_TO,
    in_channels: int = 1,
    **network: object,
) -> str:
    """Write an untrained 2-D U-Net for ``class_names`` (background first) to ``path``.

    With ``pretrained`` (a checkpoint of :mod:`training.interactive.pretrain` with the same
    network), every weight but the output layer starts from it; the output layer is new, for
    these classes. A network that reads ``in_channels`` > 1 channels where the pretrained one
    read one starts by reading their mean. ``whole_slice_up_to``: its prediction windows (see
    :func:`training.engine.inference.prediction_window`)."""
    import torch

    from training.engine.networks import UNet

    names = [str(n).strip() for n in class_names]
    if len(names) < 2:
        raise ValueError("name at least one structure besides the background")
    if any(not n for n in names):
        raise ValueError("every structure needs a name")
    if len(set(names)) != len(names):
        raise ValueError("two structures have the same name")
    if len(names) > 255:
        raise ValueError("at most 254 structures (255 means 'not annotated')")
    cfg = {**NEW_MODEL_NETWORK, **network}
    torch.manual_seed(seed)
    if int(in_channels) < 1:
        raise ValueError("a new model reads at least one channel")
    model = UNet(dims=2, in_channels=int(in_channels), num_classes=len(names),
                 **cfg)  # type: ignore[arg-type]
    if pretrained:
        _copy_pretrained(model, pretrained)
    meta = {
        "num_classes": len(names), "class_names": names, "dims": 2, "size": list(size),
        "normalization": dict(DEFAULT_NORMALIZATION), "method": "none", "untrained": True,
        "new_model": True,  # taught from scratch in the dock: kept by every fine-tune of it
        "downsample": 1.0, "steps_done": 0, "sampling": "patch",
        "whole_slice_up_to": float(whole_slice_up_to),
    }
    if pretrained:
        meta["pretrained_from"] = os.path.basename(os.fspath(pretrained))
    return save_checkpoint(path, model, meta)


def _copy_pretrained(model: object, path: str | os.PathLike) -> None:
    """Load every weight but the output layer (``seg``) from ``path`` into ``model``."""
    from training.engine.checkpoint import CheckpointError, read_checkpoint

    state = read_checkpoint(path)["state_dict"]
    own = model.state_dict()  # type: ignore[attr-defined]
    first = next(k for k, v in own.items() if v.ndim > 2)  # the layer that reads the scan
    body = {k: _spread_over_channels(v, own[k]) if k == first and k in state else v
            for k, v in state.items() if not k.startswith("seg.")}
    wrong = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith("seg.") and k not in body]
    if wrong or missing:
        raise CheckpointError(f"{path} was pretrained for another network "
                              f"({(wrong or missing)[0]} does not fit)")
    model.load_state_dict(body, strict=False)  # type: ignore[attr-defined]


def _spread_over_channels(weight, like):
    """A first layer pretrained on one channel, for a network that reads c: each channel gets
    the weight / c, so the new network starts by reading the channels' mean. Pixel unshuffle
    lays a channel's r x r block out as consecutive inputs, channel after channel, hence the
    tiling. A weight of another shape is returned as it is (and refused by the caller)."""
    if (weight.ndim == like.ndim > 2 and weight.shape[0] == like.shape[0]
            and weight.shape[2:] == like.shape[2:] and like.shape[1] != weight.shape[1]
            and like.shape[1] % weight.shape[1] == 0):
        c = like.shape[1] // weight.shape[1]
        return weight.repeat(1, c, *([1] * (weight.ndim - 2))) / c
    return weight


def is_untrained(path: str | os.PathLike | None) -> bool:
    """A checkpoint made by :func:`new_model` and not trained yet (unreadable: False; whoever
    loads it reports why)."""
    from training.engine.checkpoint import CheckpointError, read_meta

    if not path:
        return False
    try:
        return bool(read_meta(path).get("untrained"))
    except (CheckpointError, OSError):
        return False

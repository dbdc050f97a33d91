"""Atomic, safe-to-load checkpoints: weights plus a plain-data ``meta`` dict.

The file is a ``torch.save`` of ``{"format": ..., "state_dict": ..., "meta": ...}`` where meta
holds only dicts, lists, strings and numbers, so ``torch.load(weights_only=True)`` can read it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from training.atomic import atomic_write
from training.cpu_math import zero_denormal_weights
from training.ema import unwrap
from training.networks import build_network, network_config

FORMAT = "napari-semiseg-checkpoint/1"


class CheckpointError(ValueError):
    """The file is missing, corrupt, or not a napari-semiseg checkpoint."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> str:
    """Write ``model`` and ``meta`` to ``path`` atomically (temporary file, then ``os.replace``).

    ``meta["network"]`` is filled from the model; the rest of meta must be plain data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    meta = {**meta, "network": network_config(model)}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"not writing {path}: weights {bad[0]} are NaN or Inf "
                              f"(the previous checkpoint, if any, is kept)")
    payload = {"format": FORMAT, "state_dict": state, "meta": meta}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def companion_path(path: str | os.PathLike, name: str) -> Path:
    """Where a companion network of ``path`` is kept: ``model.pt`` -> ``model.teacher.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{name}{path.suffix or '.pt'}")


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The raw payload, validated (weights only, no pickled code). With ``mmap`` the weights
    stay on disk until touched: what listing models and reading cards need."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"unreadable checkpoint {path}: {first[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-semiseg checkpoint")
    return payload


def compact_checkpoint(path: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """Store a checkpoint's float weights as float16 (half the file; for shipped models).

    Loading needs nothing special: ``load_state_dict`` copies them into the float32 network,
    so prediction differs from the original only by float16 rounding of the weights.
    """
    payload = read_checkpoint(path)
    state = {k: v.half() if v.is_floating_point() else v
             for k, v in payload["state_dict"].items()}
    payload = {**payload, "state_dict": state,
               "meta": {**payload["meta"], "stored_dtype": "float16"}}
    return atomic_write(out or path, lambda fh: torch.save(payload, fh))


def read_meta(path: str | os.PathLike) -> dict:
    """A checkpoint's metadata (names, card, flags) without reading its weights."""
    return read_checkpoint(path, mmap=True)["meta"]


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the network from its stored config and load the weights; returns (model, meta)."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    try:
        model = build_network(meta["network"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} does not match its network: {exc}") from None
    zero_denormal_weights(model)  # slow on CPUs and meaningless: see training.cpu_math
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta

"""Atomic, safe-to-load checkpoints: weights plus a plain-data ``meta`` dict.

The file is a ``torch.save`` of ``{"format": ..., "state_dict": ..., "meta": ...}`` where meta
holds only dicts, lists, strings and numbers, so ``torch.load(weights_only=True)`` can read it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.core.atomic import atomic_write
from training.core.cpu_math import zero_denormal_weights
from training.engine.ema import unwrap
from training.engine.networks import build_network, network_config

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
    """The raw payload, validated (weights only, no pickled code; metadata that fits its
    network; without ``mmap``, finite weights). With ``mmap`` the weights stay on disk until
    touched: what listing models and reading cards need."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(_unreadable(path, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-semiseg checkpoint")
    for key in ("state_dict", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no {key!r} (the file is incomplete "
                                  f"or was written by another tool)")
    check_meta(payload["meta"], path)
    if not mmap:  # every reader of weights (predict, --init, Retrain) gets only finite ones
        check_weights(payload["state_dict"], path)
    return payload


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in the user's terms. Torch's own
    message advises loading again with ``weights_only=False``: exactly what a model file from
    elsewhere must never get."""
    text = str(exc).strip()
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        return f"unreadable checkpoint {path}: {e.strerror or e}"
    if not head:
        return f"unreadable checkpoint {path}: the file is empty"
    if "Weights only load failed" in text:
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch zip / a pickle
            found = re.search(r"GLOBAL (\S+)", text)
            what = f" ({found.group(1)})" if found else ""
            return (f"unreadable checkpoint {path}: it holds Python objects besides "
                    f"weights{what}. napari-semiseg loads weights only, so that a model file "
                    f"cannot run code; models it saved (Save model, semiseg train) load")
        kind = " (it looks compressed: a scan?)" if head.startswith(b"\x1f\x8b") else ""
        return f"unreadable checkpoint {path}: not a model file{kind}"
    if head.startswith(b"PK\x03\x04") or "PytorchStreamReader" in text:
        return (f"unreadable checkpoint {path}: the file is damaged or incomplete (cut off "
                f"while it was written or copied?)")
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"unreadable checkpoint {path}: {first[:200]}"


def check_weights(state: dict, path: str | os.PathLike) -> None:
    """Refuse NaN/Inf weights where a checkpoint is read: such a network predicts background
    everywhere, or noise, and would pass for a result."""
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: weight {k!r} is not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{path}: weight {k} holds {bad:,} NaN or Inf values; the "
                                  f"training that wrote it diverged. Use an earlier checkpoint")


def check_meta(meta: dict, path: str | os.PathLike) -> None:
    """The metadata a network is rebuilt and used from: present, and consistent with itself."""
    net = meta.get("network")
    if not isinstance(net, dict):
        raise CheckpointError(f"{path}: checkpoint metadata has no 'network' (how to rebuild it)")
    for key in ("dims", "num_classes"):
        if not isinstance(net.get(key), int) or isinstance(net.get(key), bool):
            raise CheckpointError(f"{path}: checkpoint metadata network.{key} is "
                                  f"{net.get(key)!r}; expected a whole number")
    n = net["num_classes"]
    if "num_classes" in meta and meta["num_classes"] != n:
        raise CheckpointError(f"{path}: num_classes {meta['num_classes']!r} does not fit its "
                              f"network's {n} output classes")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != n):
        raise CheckpointError(f"{path}: class_names {names!r} do not name its {n} classes")
    size = meta.get("size")
    if size is not None and (not isinstance(size, list) or len(size) != net["dims"]
                             or not all(isinstance(v, int) and v > 0 for v in size)):
        raise CheckpointError(f"{path}: size {size!r} is not {net['dims']} positive whole "
                              f"numbers")


def check_init_fits(path: str | os.PathLike, meta: dict, data_names: list[str],
                    num_classes: int | None = None) -> None:
    """Refuse fine-tuning ``path`` on data whose classes are other structures.

    The trainer keeps the checkpoint's names for its classes and grows its head for classes
    the data adds (named after the data). That is right when the data's classes extend the
    model's; when the data names class 1 "RV" and the model calls it "FLAIR abnormality", the
    result would be silently wrong, so it is refused here, as is a ``--num-classes`` that the
    model's head cannot shrink to. Names like ``class2`` (the data names nothing) never clash.
    """
    n = int(meta["network"]["num_classes"])
    old = list(meta.get("class_names") or [])
    if num_classes is not None and num_classes < n:
        raise CheckpointError(f"--num-classes {num_classes} does not fit --init {path}, which "
                              f"predicts {n} classes ({', '.join(old) or 'unnamed'})")
    for k in range(1, min(len(old), len(data_names))):
        new, was = str(data_names[k]).strip(), str(old[k]).strip()
        if new.lower() != was.lower() and new != f"class{k}":
            raise CheckpointError(
                f"--init {path} does not fit this data: its class {k} is {was!r}, the data's "
                f"is {new!r} (model classes: {', '.join(old)}; data classes: "
                f"{', '.join(map(str, data_names))}). Fine-tune a model of these structures, "
                f"or train without --init")


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


def update_meta(path: str | os.PathLike, **fields: Any) -> str:
    """Set metadata fields of a checkpoint in place, atomically (weights untouched)."""
    payload = read_checkpoint(path)
    payload = {**payload, "meta": {**payload["meta"], **fields}}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


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
    zero_denormal_weights(model)  # slow on CPUs and meaningless: see training.core.cpu_math
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta

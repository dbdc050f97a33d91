"""Predict-speed benchmark: predict + uncertainty on a full-size volume, and act student vs teacher.

Timings are medians over repeats, with the models interleaved so that load from other processes
hits them alike; the volume is a real scan resampled to the target shape (default 100x256x256),
so intensities and anatomy are realistic.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.core.io import read_image
from training.engine.checkpoint import companion_path, load_checkpoint
from training.engine.inference import DEFAULT_BATCH, model_channels, predict_volume
from training.engine.networks import count_parameters

DEFAULT_SHAPE = (100, 256, 256)


def benchmark_volume(path: str, shape: Sequence[int] = DEFAULT_SHAPE) -> np.ndarray:
    """A real scan resampled (trilinear) to ``shape`` (z, y, x), float32."""
    vol, _ = read_image(path)
    if vol.ndim != 3 or min(vol.shape) < 2:
        raise ValueError(f"{path}: expected a 3-D scan, got shape {vol.shape}")
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear",
                        align_corners=False)
    return out[0, 0].numpy()


@dataclass
class Entry:
    """One model to time: its label, role, network and checkpoint meta."""

    label: str
    role: str
    path: str
    model: torch.nn.Module
    meta: dict


def entries_for(paths: Sequence[str]) -> list[Entry]:
    """Each checkpoint, plus its teacher when it was trained with ``act`` (saved beside it)."""
    out = []
    names = [Path(p).name for p in paths]
    for p in paths:
        model, meta = load_checkpoint(p, device="cpu")
        role = "student" if meta.get("method") == "act" else "model"
        # two checkpoints of one name (today's and an earlier one) are told apart by folder
        name = Path(p).name if names.count(Path(p).name) == 1 else f"{Path(p).parent.name}/" \
            f"{Path(p).name}"
        out.append(Entry(name, role, str(p), model, meta))
        teacher = companion_path(p, "teacher")
        if role == "student" and teacher.is_file():
            tm, tmeta = load_checkpoint(teacher, device="cpu")
            out.append(Entry(name, "teacher", str(teacher), tm, tmeta))
    return out


def time_predictions(
    entries: Sequence[Entry], volume: np.ndarray, mc_samples: Sequence[int], repeats: int,
    log: Callable[[str], None] = print, batches: Sequence[int | None] = (None,),
) -> dict[tuple[int, int, int | None], float]:
    """Median seconds of ``predict_volume`` (labels + uncertainty) per (entry index, mc,
    slices per pass; None = the product's default), all interleaved within each repeat."""
    times: dict[tuple[int, int, int | None], list[float]] = {}
    # a model that reads c channels gets the grey volume in each (the same pixels to push)
    inputs = [volume if model_channels(e.meta) == 1 else
              np.repeat(volume[..., None], model_channels(e.meta), -1) for e in entries]
    for e, x in zip(entries, inputs, strict=True):  # warm-up: allocator, first-call overheads
        predict_volume(e.model, e.meta, x[:4], device="cpu", probabilities=False)
    for r in range(repeats):
        for mc in mc_samples:
            for b in batches:
                for i, e in enumerate(entries):
                    t0 = time.perf_counter()
                    predict_volume(e.model, e.meta, inputs[i], mc_samples=mc, device="cpu",
                                   batch_size=b or DEFAULT_BATCH, probabilities=False)
                    times.setdefault((i, mc, b), []).append(time.perf_counter() - t0)
        log(f"repeat {r + 1}/{repeats} done")
    return {k: statistics.median(v) for k, v in times.items()}


def speed_table(
    entries: Sequence[Entry], medians: dict[tuple[int, int, int | None], float],
    mc_samples: Sequence[int], dice: dict[int, float] | None, header: str,
    batches: Sequence[int | None] = (None,),
) -> str:
    """Markdown: per model and slices per pass, parameters, median predict time per MC
    setting, test Dice, and for an act student the speed-up over its teacher (at the same
    slices per pass) and the Dice it gives up."""
    cols = ["model", "role", "slices per pass", "parameters"] + [
        "predict + uncertainty, s" + (f" (MC-dropout ×{mc})" if mc else " (softmax entropy)")
        for mc in mc_samples]
    cols += ["test mean Dice", "speed-up vs teacher", "Dice loss vs teacher"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    mc0 = mc_samples[0]
    for b in batches:
        for i, e in enumerate(entries):
            cells = [e.label, e.role, str(b) if b else f"{DEFAULT_BATCH} (default)",
                     f"{count_parameters(e.model):,}"]
            cells += [f"{medians[(i, mc, b)]:.2f}" for mc in mc_samples]
            cells.append(f"{dice[i] * 100:.1f}" if dice and i in dice else "—")
            teacher = next((j for j, t in enumerate(entries)
                            if t.role == "teacher" and t.label == e.label), None)
            if e.role == "student" and teacher is not None:
                cells.append(f"{medians[(teacher, mc0, b)] / medians[(i, mc0, b)]:.2f}×")
                cells.append(f"{(dice[teacher] - dice[i]) * 100:+.1f}" if dice else "—")
            else:
                cells += ["—", "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

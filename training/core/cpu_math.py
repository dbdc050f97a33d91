"""Denormal floats off: trained weights and activations hold many values below 1e-38, and on
CPUs without flush-to-zero every multiply with one is tens of times slower. On an Intel Xeon
the shipped models predicted a 100 x 256 x 256 scan 4-10x slower with them
(`benchmarks/results/denormal_speed.md`); values that small change no label.

The setting is per thread, and the threads torch computes on inherit it only when they are
created, so it is made when this module is first imported (before torch computes anything
here) and again by each predict and training run. ``SEMISEG_KEEP_DENORMALS=1`` leaves floats
as they are (for measuring the difference).
"""

from __future__ import annotations

import os

import torch
from torch import nn

#: the smallest normal float32; anything nonzero below it is a denormal
SMALLEST_NORMAL = float(torch.finfo(torch.float32).tiny)


def _kept() -> bool:
    return os.environ.get("SEMISEG_KEEP_DENORMALS", "") not in ("", "0")


def flush_denormals() -> bool:
    """Treat denormal floats as zero in this thread's CPU math and in the compute threads it
    starts from now on. Returns whether it is on."""
    return False if _kept() else bool(torch.set_flush_denormal(True))


def zero_denormal_weights(model: nn.Module) -> int:
    """Set every denormal parameter and buffer of ``model`` to 0; returns how many there were."""
    if _kept():
        return 0
    count = 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                tiny = (t.abs() < SMALLEST_NORMAL) & (t != 0)
                n = int(tiny.sum())
                if n:
                    t[tiny] = 0
                    count += n
    return count


flush_denormals()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX, or AVX-512 BF16 as on recent
    Xeons and AMD Zen 4). Elsewhere bf16 is emulated and slower than float32."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except (RuntimeError, AttributeError):  # a torch without the probe: assume not
            continue
    return False

"""Exponential moving average teachers."""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module behind DDP and ``torch.compile`` wrappers (either, both, in any order)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy of ``student`` (no gradients)."""
    teacher = copy.deepcopy(unwrap(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, alpha: float, step: int | None = None
) -> None:
    """teacher = a * teacher + (1 - a) * student for parameters; buffers are copied.

    With ``step`` given, ``a = min(alpha, 1 - 1 / (step + 1))`` so the early teacher follows the
    student closely (Tarvainen & Valpola).
    """
    a = alpha if step is None else min(alpha, 1.0 - 1.0 / (step + 1))
    s = unwrap(student)
    tps, sps = list(teacher.parameters()), list(s.parameters())
    if len(tps) != len(sps):
        raise ValueError("teacher and student have different parameters")
    # two calls for all tensors instead of two per tensor: fewer kernel launches on a GPU
    torch._foreach_mul_(tps, a)
    torch._foreach_add_(tps, [p.detach() for p in sps], alpha=1.0 - a)
    for tb, sb in zip(teacher.buffers(), s.buffers(), strict=True):
        tb.copy_(sb)


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """Overwrite ``target``'s parameters and buffers with ``source``'s."""
    target.load_state_dict(unwrap(source).state_dict())

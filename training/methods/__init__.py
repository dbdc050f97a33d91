"""Training methods, one module each, behind :class:`training.methods.base.Method`."""

from __future__ import annotations

from typing import Any

from training.methods.act import ACT
from training.methods.base import Method
from training.methods.bcp import BCP
from training.methods.cam_weak import CamWeak
from training.methods.dtml import DTML
from training.methods.mean_teacher import MeanTeacher
from training.methods.supervised import Supervised
from training.methods.ua_mt import UAMT
from training.methods.ug_mcl import UGMCL

_REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Supervised, MeanTeacher, UAMT, DTML, UGMCL, BCP, ACT, CamWeak)
}
METHODS: list[str] = list(_REGISTRY)


def get_method(name: str, **opts: Any) -> Method:
    """Instantiate a method by name (see :data:`METHODS`)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
    return cls(**opts)


__all__ = ["METHODS", "Method", "get_method"]

"""Training methods, one module each, behind :class:`training.methods.base.Method`."""

from __future__ import annotations

from typing import Any

from training.methods.act import ACT
from training.methods.base import GENERAL_OPTIONS, PASSED_TO_ALL, Method
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


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"bcp:conf=0.9,sup=1"`` -> ``("bcp", {"conf": 0.9, "sup": 1.0})``: a method and its
    options, checked against what the method declares (a typo is an error, never ignored)."""
    name, _, rest = spec.partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    declared = _REGISTRY[name].options
    opts: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"method option {item!r} in {spec!r} is not key=value")
        _REGISTRY[name].check_options([key])
        if key in PASSED_TO_ALL:
            raise ValueError(f"{key} is a training setting: use --{key.replace('_', '-')}")
        default: Any = declared[key][0] if key in declared else 0.0  # general ones are numbers
        opts[key] = _typed(value, default, item, spec)
    return name, opts


def _typed(value: str, default: Any, item: str, spec: str) -> Any:
    if isinstance(default, str):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"method option {item!r} in {spec!r} needs a number") from None
    if isinstance(default, bool):
        return bool(number)
    return int(number) if isinstance(default, int) else number


def options_help() -> str:
    """Every method's options, one line each, for ``semiseg train --help``."""
    lines = ["method options (--method NAME:opt=value,...):"]
    for key, text in GENERAL_OPTIONS.items():
        lines.append(f"  {'any:' + key:<26} {text}")
    for name, cls in _REGISTRY.items():
        for key, (default, text) in cls.options.items():
            lines.append(f"  {f'{name}:{key}={default}':<26} {text}")
    return "\n".join(lines)


__all__ = ["METHODS", "Method", "get_method", "options_help", "parse_spec"]

"""The model library: the models shipped with the plugin and the user's own, chosen for a scan.

Each shipped checkpoint carries a card (:mod:`training.library.model_card`): anatomy, classes,
training
scans' statistics, test Dice. :func:`choose` compares the open scan with every card and picks the
closest, or says why none fits. Checkpoints are read only when listed or used (a few MB each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.library.model_card import MATCH_LIMIT, describe, match, scan_statistics

SHIPPED_DIR = Path(__file__).resolve().parent / "models"


@dataclass
class LibraryModel:
    """One checkpoint of the library, with its card (None for a model without one)."""

    path: Path
    card: dict[str, Any] | None = None
    shipped: bool = True
    class_names: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How the dock lists it: by anatomy, or by file name for a user's model."""
        if self.card:
            return describe(self.card)
        return f"My model: {self.path.stem}"


def user_models_dir() -> Path:
    home = Path(os.environ.get("NAPARI_SEMISEG_HOME", Path.home() / ".napari-semiseg"))
    return home / "models"


def _entry(path: Path, shipped: bool) -> LibraryModel | None:
    from training.engine.checkpoint import CheckpointError, read_meta

    try:
        meta = read_meta(path)
    except (CheckpointError, OSError):
        return None  # a broken file in the user's folder is not listed
    return LibraryModel(path, meta.get("card"), shipped, list(meta.get("class_names") or []))


def library(include_user: bool = True) -> list[LibraryModel]:
    """The shipped models (those with a card first), then the user's saved ones."""
    out = [e for p in sorted(SHIPPED_DIR.glob("*.pt")) if ".teacher." not in p.name
           and (e := _entry(p, True)) is not None]
    out.sort(key=lambda e: e.card is None)
    if include_user and user_models_dir().is_dir():
        out += [e for p in sorted(user_models_dir().glob("*.pt"))
                if (e := _entry(p, False)) is not None]
    return out


def choose(models: list[LibraryModel], image: np.ndarray, spacing_zyx, channels: int = 1
           ) -> tuple[LibraryModel | None, str]:
    """The model whose training scans this scan looks most like, and why; or None and why not."""
    stats = scan_statistics(image, spacing_zyx, channels)
    scored = [(match(m.card, stats), m) for m in models if m.card]
    if not scored:
        return None, "no model in the library has a card to compare the scan with"
    (dist, reasons), best = min(scored, key=lambda t: t[0][0])
    if dist > MATCH_LIMIT:
        kinds = "; ".join(f"not {m.card['anatomy']} ({m.card['modality']}): "
                          f"{', '.join(r) or 'no close match'}" for (_, r), m in scored)
        return None, (f"This scan does not look like any model's training scans ({kinds}). "
                      f"Choose New model and paint a few slices.")
    why = f"closest to its training scans (distance {dist:.2f}"
    why += f"; differs in: {'; '.join(reasons)})" if reasons else ")"
    return best, f"{best.card['anatomy']} model chosen: {why}"

"""Noticing a training that has silently collapsed, while it runs.

Two signs, both seen in this project (issue 23: the weak path's loss sat at exactly 0.5000 from
step 190 of 600, the network predicting background everywhere):

- the loss stops moving: over the last ``window`` steps it varies by less than ``flat``;
- the network predicts one class everywhere on labelled patches whose labels hold several.

Each sign is reported once, as a ``warning`` event the command line prints and the dock shows;
the training goes on (a user may still want its checkpoint), and the checkpoint records it.
"""

from __future__ import annotations

from collections import deque

import torch

from training import IGNORE_INDEX

WINDOW = 100  # steps of loss history judged at once
FLAT = 1e-4  # a loss that moves less than this over the window has stopped learning
ONE_CLASS_CHECKS = 3  # consecutive checks that must all see one class predicted


class CollapseWatch:
    """Feed it every step's loss and, now and then, a labelled batch and the model's logits."""

    def __init__(self, window: int = WINDOW, flat: float = FLAT,
                 one_class_checks: int = ONE_CLASS_CHECKS) -> None:
        self.losses: deque[float] = deque(maxlen=window)
        self.flat = flat
        self.one_class_checks = one_class_checks
        self.one_class_seen = 0
        self.reported: set[str] = set()

    def loss(self, step: int, value: float) -> str | None:
        """A message the first time the loss has stopped moving, else None."""
        self.losses.append(float(value))
        if len(self.losses) < (self.losses.maxlen or 0) or "flat" in self.reported:
            return None
        if max(self.losses) - min(self.losses) < self.flat:
            self.reported.add("flat")
            return (f"the training loss has not moved for {len(self.losses)} steps (it stays at "
                    f"{value:.4f} at step {step}): the network has probably collapsed; try a "
                    "lower learning rate, or check the labels")
        return None

    def prediction(self, step: int, logits: torch.Tensor, labels: torch.Tensor) -> str | None:
        """A message the first time the network predicts a single class on
        ``ONE_CLASS_CHECKS`` labelled batches in a row whose labels hold more than one."""
        if "one_class" in self.reported:
            return None
        known = labels != IGNORE_INDEX
        target = torch.unique(labels[known])
        if len(target) < 2:
            return None  # nothing to tell: the batch itself shows one class
        predicted = torch.unique(logits.argmax(1)[known])
        if len(predicted) > 1:
            self.one_class_seen = 0
            return None
        self.one_class_seen += 1
        if self.one_class_seen < self.one_class_checks:
            return None
        self.reported.add("one_class")
        return (f"at step {step} the network predicts class {int(predicted[0])} everywhere on "
                f"labelled patches that hold classes {target.tolist()}: it has collapsed; try "
                "a lower learning rate, or check the labels")

"""The Retrain settings of the dock, as a magicgui form: method, steps, shape prior, extent,
learning between scans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, SpinBox


class RetrainForm:
    """What the next Retrain does; ``native`` is the Qt widget to put in the dock."""

    def __init__(self, methods: Sequence[str], method: str = "mean_teacher",
                 steps: int = 60) -> None:
        self.method = ComboBox(label="Method", choices=list(methods), value=method,
                               tooltip="The semi-supervised method that fine-tunes the model")
        self.steps = SpinBox(label="Steps", min=1, max=100_000, value=steps,
                             tooltip="Training steps per Retrain")
        self.shape_prior = CheckBox(
            text="Shape prior between painted slices",
            tooltip="Train on the shape interpolation between painted slices too, and blend "
                    "the prediction with it (on for New model)")
        self.within_extent = CheckBox(
            text="Structure ends at outer painted slices",
            tooltip="As for 'fill between slices': paint the structure's first and last "
                    "slices, and the Retrain predicts nothing beyond them. Leave off while "
                    "painting suggested slices.")
        self.between_scans = CheckBox(
            text="Learn between scans", value=True, enabled=False,  # until New model
            tooltip="New model: as you open the next scan, the model trains more on the scans "
                    "you finished, in the background (about a minute on 2 cores), and that "
                    "scan's prediction is refreshed. Untick to keep the cores free.")
        self.container = Container(widgets=[self.method, self.steps, self.shape_prior,
                                            self.within_extent, self.between_scans],
                                   labels=True)
        self.container.margins = (0, 0, 0, 0)

    @property
    def native(self) -> Any:
        return self.container.native

"""Slice tags in the assistant: tag slices, train from tags, see CAMs and weak masks, promote.

A section of the Segmentation assistant dock. Tags live in the session (saved with it); training
runs in a background process through :class:`~napari_semiseg.training_bridge.TrainingBridge`
with :func:`napari_semiseg.weak_job.run_weak` as its target, like Retrain.

Shortcuts (none is a napari default): Shift+Y tags the current slice "contains structure",
Shift+N "no structure".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .training_bridge import TrainingBridge, discard_job
from .weak_job import make_weak_job, run_weak

CAM_LAYER, WEAK_LAYER = "CAM", "weak mask"
KEY_POSITIVE, KEY_NEGATIVE = "Shift-Y", "Shift-N"


class TagsPanel(QGroupBox):
    """Tag buttons and counts, Train from tags, Promote weak mask; bound to an assistant."""

    def __init__(self, viewer: Any, assistant: Any, parent: QWidget | None = None) -> None:
        super().__init__("Slice tags (weak supervision)", parent)
        self.viewer = viewer
        self.assistant = assistant
        self.bridge = TrainingBridge(target=run_weak)
        self.weak: np.ndarray | None = None
        self._job = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.pos_btn = QPushButton("Tag slice: contains structure")
        self.pos_btn.setToolTip(f"Shortcut: {KEY_POSITIVE}")
        self.pos_btn.clicked.connect(lambda: self.tag_current(1))
        self.neg_btn = QPushButton("Tag slice: no structure")
        self.neg_btn.setToolTip(f"Shortcut: {KEY_NEGATIVE}")
        self.neg_btn.clicked.connect(lambda: self.tag_current(0))
        row.addWidget(self.pos_btn)
        row.addWidget(self.neg_btn)
        lay.addLayout(row)
        self.count_label = QLabel()
        lay.addWidget(self.count_label)
        row = QHBoxLayout()
        self.train_btn = QPushButton("Train from tags")
        self.train_btn.clicked.connect(self.train_from_tags)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(60)
        self.steps_spin.setToolTip("steps of the tag classifier and of the segmentation network")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop training from tags; the model in use stays as it was")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.train_btn)
        row.addWidget(QLabel("steps"))
        row.addWidget(self.steps_spin)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        lay.addWidget(self.progress)
        self.status = QLabel("Tag a few slices each way, then Train from tags.")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.promote_btn = QPushButton("Promote weak mask to prediction")
        self.promote_btn.clicked.connect(self.promote_current)
        lay.addWidget(self.promote_btn)
        self.model_kwargs: dict = {}  # e.g. base/depth for tests; passed to make_weak_job
        viewer.bind_key(KEY_POSITIVE, lambda v: self.tag_current(1), overwrite=True)
        viewer.bind_key(KEY_NEGATIVE, lambda v: self.tag_current(0), overwrite=True)
        self.show_counts()

    # ----- tags ---------------------------------------------------------------------------------

    def _session(self):
        return self.assistant.session or self.assistant._ensure_session()

    def tag_current(self, tag: int | None) -> int | None:
        """Tag the slice on screen (axis 0); returns its index."""
        s = self._session()
        if s is None:
            return None
        index = self.assistant._current_slice()
        s.tag_slice(index, tag)
        self.show_counts()
        return index

    def show_counts(self) -> None:
        s = self.assistant.session
        tags = s.tag_array() if s is not None else np.zeros(0)
        self.count_label.setText(f"Tags: {int((tags == 1).sum())} with structure, "
                                 f"{int((tags == 0).sum())} without")

    # ----- training -----------------------------------------------------------------------------

    def train_from_tags(self) -> None:
        s = self._session()
        if s is None:
            return
        if self.bridge.running or self.assistant.bridge.running:
            show_warning("A training run is already going.")
            return
        steps = self.steps_spin.value()
        try:
            job = make_weak_job(s, steps=steps, **self.model_kwargs)
            self.bridge.start(job)
        except Exception as e:
            show_error(f"Cannot train from tags: {e}")
            return
        self._job = job
        self.progress.setRange(0, job.steps + job.classifier_steps)
        self.progress.setValue(0)
        self.status.setText("Training from tags in the background…")
        self.train_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self._timer.start()

    def cancel(self) -> None:
        if self.bridge.running:
            self.bridge.cancel()
            self.cancel_btn.setEnabled(False)
            self.status.setText("Cancelling…")

    def _poll(self) -> None:
        for ev in self.bridge.poll():
            self._handle(ev)
        if not self.bridge.running:
            self._timer.stop()
            self.train_btn.setEnabled(True)
            self.cancel_btn.setEnabled(False)

    def _handle(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "progress":
            self.progress.setRange(0, int(ev["total"]))
            self.progress.setValue(int(ev["step"]))
            phase = ev.get("phase", "")
            self.status.setText(f"{phase} step {ev['step']}/{ev['total']}")
        elif kind == "done":
            self._apply(ev)
        elif kind == "warning":  # e.g. the engine saw the network collapse
            show_warning(f"Train from tags: {ev.get('message')}")
        elif kind in ("cancelled", "error"):
            self._discard()
            msg = ev.get("message", kind)
            (show_info if kind == "cancelled" else show_error)(f"Train from tags: {msg}")
            self.status.setText(f"Train from tags: {msg}")

    def _apply(self, ev: dict) -> None:
        s = self.assistant.session
        if s is None:
            return
        cam = np.load(ev["cam"])
        self.weak = np.load(ev["weak"])
        shown = self.weak.copy()
        shown[shown == 255] = 0  # untagged slices: nothing to show
        a = self.assistant
        a._set_image_layer(CAM_LAYER, cam, colormap="turbo", blending="additive", opacity=0.5)
        layer = a._layer(WEAK_LAYER)
        if layer is None:
            self.viewer.add_labels(shown, opacity=0.5, **a._layer_kwargs(WEAK_LAYER))
        else:
            layer.data = shown
        # the cam_weak network becomes the model in use: Retrain fine-tunes it with corrections
        s.add_version(ev["checkpoint"], method="cam_weak", steps=int(ev.get("steps", 0)),
                      note="trained from tags", make_current=True)
        s.merge_prediction(np.load(ev["prediction"]), np.load(ev["uncertainty"]))
        a._show_prediction()
        a._show_versions()
        self._discard()
        what = {"anomaly": "intensities unlike those of the slices tagged absent"}.get(
            ev.get("localiser", ""), "the tag classifier's evidence")
        self.status.setText(f"Done: the CAM layer shows {what}; weak mask layer updated; the "
                            "network trained from tags is in use. Promote weak masks or "
                            "correct, then Retrain.")

    def _discard(self) -> None:
        if self._job is not None:
            discard_job(self._job)  # the session copied the checkpoint
            self._job = None

    # ----- promote ------------------------------------------------------------------------------

    def promote_current(self) -> int | None:
        """The weak mask of the slice on screen becomes a labelled slice of the prediction."""
        s = self.assistant.session
        if s is None or self.weak is None or self.weak.shape != s.image.shape:
            show_warning("Train from tags first: there is no weak mask for this scan yet.")
            return None
        index = self.assistant._current_slice()
        labels = self.weak[index].copy()
        if (labels == 255).all():
            show_warning(f"Slice {index} is not tagged: it has no weak mask.")
            return None
        labels[labels == 255] = 0
        s.mark_labelled(0, index, labels)
        self.assistant._show_prediction()
        self.assistant._show_labelled()
        return index

    def close_bridge(self) -> None:
        self._timer.stop()
        self.bridge.close()


def add_tags_panel(assistant_widget: Any) -> TagsPanel:
    """Add the slice-tags section to an assistant dock widget (once) and return it."""
    existing = getattr(assistant_widget, "tags_panel", None)
    if existing is not None:
        return existing
    panel = TagsPanel(assistant_widget.viewer, assistant_widget)
    layout = assistant_widget.layout()
    # before the trailing stretch, so the section sits with the others
    layout.insertWidget(max(layout.count() - 1, 0), panel)
    assistant_widget.tags_panel = panel
    return panel

"""Slice tags in the assistant: tag slices, train from tags, see CAMs and weak masks, promote.

A section of the Segmentation assistant dock, talking to it through its public API
(:class:`~napari_semiseg._widget.AssistantWidget`). Tags live in the session (saved with it);
training runs in a background process through
:class:`~napari_semiseg.training_bridge.TrainingBridge` with
:func:`napari_semiseg.weak_job.run_weak` as its target, in the dock's one job slot.

Shortcuts (none is a napari default): Shift+Y tags the current slice "contains structure",
Shift+N "no structure".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from .jobs import Job
from .shortcuts import bind_shortcuts
from .training_bridge import TrainingBridge
from .weak_job import make_weak_job, run_weak

CAM_LAYER, WEAK_LAYER = "CAM", "weak mask"
KEY_POSITIVE, KEY_NEGATIVE = "Shift-Y", "Shift-N"


class TagsPanel(QWidget):
    """Tag buttons and counts, Train from tags, Promote weak mask; bound to an assistant."""

    JOB = "Train from tags"  # its name in the dock's job slot
    TRAIN_TIP = "Train a tag classifier, its CAMs and a network from the tags, in the background"

    def __init__(self, viewer: Any, assistant: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.assistant = assistant
        self.bridge = TrainingBridge(run_weak)
        self.weak: np.ndarray | None = None
        self._running: Job | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Tag the slice on screen:"))
        row = QHBoxLayout()
        self.pos_btn = QPushButton("Contains structure")
        self.pos_btn.setToolTip(f"Shortcut: {KEY_POSITIVE}")
        self.pos_btn.clicked.connect(lambda: self.tag_current(1))
        self.neg_btn = QPushButton("No structure")
        self.neg_btn.setToolTip(f"Shortcut: {KEY_NEGATIVE}")
        self.neg_btn.clicked.connect(lambda: self.tag_current(0))
        row.addWidget(self.pos_btn)
        row.addWidget(self.neg_btn)
        lay.addLayout(row)
        self.count_label = QLabel()
        lay.addWidget(self.count_label)
        row = QHBoxLayout()
        self.train_btn = QPushButton("Train from tags")
        self.train_btn.setToolTip(self.TRAIN_TIP)
        self.train_btn.clicked.connect(self.train_from_tags)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(60)
        self.steps_spin.setToolTip("steps of the tag classifier and of the segmentation network")
        row.addWidget(self.train_btn)
        row.addWidget(QLabel("steps"))
        row.addWidget(self.steps_spin)
        lay.addLayout(row)
        self.status = QLabel("Tag a few slices each way, then Train from tags.")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.promote_btn = QPushButton("Promote weak mask to prediction")
        self.promote_btn.clicked.connect(self.promote_current)
        lay.addWidget(self.promote_btn)
        self.model_kwargs: dict = {}  # e.g. base/depth for tests; passed to make_weak_job
        bind_shortcuts(viewer, self,
                       {KEY_POSITIVE: "tag_structure", KEY_NEGATIVE: "tag_no_structure"})
        self.show_counts()

    # ----- tags ---------------------------------------------------------------------------------

    def tag_current(self, tag: int | None) -> int | None:
        """Tag the slice on screen (axis 0); returns its index."""
        s = self.assistant.ensure_session()
        if s is None:
            return None
        index = self.assistant.current_slice()
        s.tag_slice(index, tag)
        self.show_counts()
        return index

    def tag_structure(self) -> int | None:
        return self.tag_current(1)

    def tag_no_structure(self) -> int | None:
        return self.tag_current(0)

    def show_counts(self) -> None:
        s = self.assistant.session
        tags = s.tag_array() if s is not None else np.zeros(0)
        self.count_label.setText(f"Tags: {int((tags == 1).sum())} with structure, "
                                 f"{int((tags == 0).sum())} without")

    # ----- training -----------------------------------------------------------------------------

    def train_from_tags(self) -> None:
        if self.assistant.refused_while_busy():  # one job at a time
            return
        s = self.assistant.ensure_session()
        # one training at a time: opening this scan may have started the training between scans
        if s is None or self.assistant.refused_while_busy(training=True):
            return
        try:
            job = make_weak_job(s, steps=self.steps_spin.value(), **self.model_kwargs)
        except Exception as e:
            show_error(f"Cannot train from tags: {e}")
            return
        running = self.assistant.start_job(self.JOB, s, files=job)
        if running is None:
            return
        try:
            self.bridge.start(job)
        except Exception as e:
            self.assistant.jobs.finish(running)
            show_error(f"Cannot train from tags: {e}")
            return
        self._running = running
        self.assistant.job_progress(0, job.steps + job.classifier_steps,
                                    "Training from tags in the background…")
        self.status.setText("Training from tags in the background…")
        self._timer.start()

    def cancel(self) -> None:
        if self.bridge.running:
            self.bridge.cancel()
            self.assistant.status.setText("Cancelling…")

    def _poll(self) -> None:
        for ev in self.bridge.poll():
            self._handle(ev)
        if not self.bridge.running:
            self._timer.stop()
            if self._running is not None:
                job, self._running = self._running, None
                self.assistant.jobs.finish(job)

    def _handle(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "progress":
            phase = ev.get("phase", "")
            self.assistant.job_progress(ev["step"], ev["total"],
                                        f"Train from tags: {phase} step {ev['step']}/"
                                        f"{ev['total']}")
        elif kind == "done" and self._running is not None:
            self._apply(self._running.session, ev)
        elif kind == "warning":  # e.g. the engine saw the network collapse
            show_warning(f"Train from tags: {ev.get('message')}")
        elif kind in ("cancelled", "error"):
            msg = ev.get("message", kind)
            (show_info if kind == "cancelled" else show_error)(f"Train from tags: {msg}")
            self.status.setText(f"Train from tags: {msg}")
            self.assistant.status.setText(f"Train from tags: {msg}")

    def _apply(self, s: Any, ev: dict) -> None:
        """The result goes to the session the job was started for; drawn if on screen."""
        # the cam_weak network becomes the model in use: Retrain fine-tunes it with corrections
        s.add_version(ev["checkpoint"], method="cam_weak", steps=int(ev.get("steps", 0)),
                      note="trained from tags", make_current=True)
        s.merge_prediction(np.load(ev["prediction"]), np.load(ev["uncertainty"]))
        self.weak = np.load(ev["weak"])
        what = {"anomaly": "intensities unlike those of the slices tagged absent"}.get(
            ev.get("localiser", ""), "the tag classifier's evidence")
        done = (f"Done: the CAM layer shows {what}; weak mask layer updated; the network "
                "trained from tags is in use. Promote weak masks or correct, then Retrain.")
        self.status.setText(done)
        self.assistant.status.setText("Train from tags: done.")
        if s is not self.assistant.session:
            return
        shown = self.weak.copy()
        shown[shown == 255] = 0  # untagged slices: nothing to show
        self.assistant.show_image_layer(CAM_LAYER, np.load(ev["cam"]), colormap="turbo",
                                        blending="additive", opacity=0.5)
        self.assistant.show_labels_layer(WEAK_LAYER, shown, opacity=0.5)
        self.assistant.show_session()

    # ----- promote ------------------------------------------------------------------------------

    def promote_current(self) -> int | None:
        """The weak mask of the slice on screen becomes a labelled slice of the prediction."""
        s = self.assistant.session
        if s is None or self.weak is None or self.weak.shape != s.image.shape:
            show_warning("Train from tags first: there is no weak mask for this scan yet.")
            return None
        index = self.assistant.current_slice()
        labels = self.weak[index].copy()
        if (labels == 255).all():
            show_warning(f"Slice {index} is not tagged: it has no weak mask.")
            return None
        labels[labels == 255] = 0
        s.mark_labelled(0, index, labels)
        self.assistant.show_session()
        return index

    def close_bridge(self) -> None:
        self._timer.stop()
        self.bridge.close()

"""The dock's layout: collapsible sections in the order of the loop, and the job line.

Model and Predict, Review and correct, Retrain and versions, Structures, Slice tags, Session;
then, always in view, what runs (progress, Cancel, status). The dock keeps to a third of a
1500-px window and scrolls rather than making the window taller. What the controls do is
:class:`napari_semiseg._widget.AssistantWidget`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._retrain_form import RetrainForm
from ._sections import Section
from ._structures import StructuresPanel
from ._tags import TagsPanel
from .default_model import DEFAULT_MODEL
from .shortcuts import shortcut_of

AUTO, CHECKPOINT = "Automatic: the library model that fits the scan", "Checkpoint file…"
NEW = "New model (name the structures, then paint)"
DOCK_WIDTH = 440  # px: the dock's preferred width, under a third of a 1500-px window


def _wrapped(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def _box(layout: type = QVBoxLayout) -> tuple[QWidget, Any]:
    """A section's content: a widget and its margin-free layout."""
    box = QWidget()
    lay = layout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    return box, lay


def _button(text: str, clicked: Any, tip: str = "") -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(lambda: clicked())
    button.setToolTip(tip)
    return button


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


def _narrow(combo: QComboBox) -> QComboBox:
    """A combo box whose width does not follow its longest item (the dock stays narrow)."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(12)
    combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    return combo


class DockLayout(QWidget):
    """The dock's widgets, built once by :meth:`_build`. The subclass provides what they call:
    ``predict``, ``_model_chosen``, ``next_uncertain_slice``, ``accept_slice``,
    ``_jump_to_listed``, ``choose_unlabelled_folder``, ``retrain``, ``use_version``,
    ``save_model``, ``_names_edited``, ``save_session``, ``open_session`` and ``cancel``."""

    def _build(self) -> None:
        sections = QWidget()
        column = QVBoxLayout(sections)
        column.setContentsMargins(0, 0, 4, 0)
        self.sections = {
            "model": Section("Model and Predict", self._model_section()),
            "review": Section("Review and correct", self._review_section()),
            "retrain": Section("Retrain and versions", self._retrain_section()),
            "structures": Section("Structures", self._structures_section(), expanded=False),
            "tags": Section("Slice tags", self._tags_section(), expanded=False),
            "session": Section("Session", self._session_section(), expanded=False),
        }
        for section in self.sections.values():
            column.addWidget(section)
        column.addStretch(1)
        scroll = QScrollArea()  # the dock never makes the window taller than the screen
        scroll.setWidget(sections)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        root = QVBoxLayout(self)
        root.setContentsMargins(2, 2, 2, 2)
        root.addWidget(scroll, 1)
        root.addLayout(self._job_line())

    def sizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().sizeHint()
        hint.setWidth(DOCK_WIDTH)
        return hint

    def _model_section(self) -> QWidget:
        from training.core.device import pick_device

        box, form = _box(QFormLayout)
        self.image_combo = _narrow(QComboBox())
        form.addRow("Image", self.image_combo)
        self.model_combo = _narrow(QComboBox())
        self._refresh_library()  # Automatic, the library's models, New model, a file
        self.model_combo.activated.connect(self._model_chosen)
        form.addRow("Model", self.model_combo)
        self.model_label = _wrapped(Path(DEFAULT_MODEL).name)
        form.addRow(self.model_label)  # a full row: the chooser's reasons wrap without clipping
        self.device_label = QLabel(str(pick_device()))
        form.addRow("Device", self.device_label)
        self.predict_btn = _button("Predict", self.predict)
        form.addRow(self.predict_btn)
        return box

    def _review_section(self) -> QWidget:
        box, lay = _box()
        self.next_btn = _button("Next uncertain slice", self.next_uncertain_slice,
                                "Go to the unlabelled slice where a correction helps most"
                                f" ({shortcut_of('next_uncertain_slice')})")
        self.accept_btn = _button("Accept slice", self.accept_slice,
                                  "The slice on screen is right as it is: it becomes labelled"
                                  f" ({shortcut_of('accept_slice')})")
        lay.addLayout(_row(self.next_btn, self.accept_btn))
        lay.addWidget(QLabel("Unlabelled slices to paint next, best first:"))
        self.uncertain_list = QListWidget()
        self.uncertain_list.setMaximumHeight(90)
        self.uncertain_list.setToolTip("Ranked by the uncertainty summed near the structure on "
                                       "the slice, times its distance to your nearest labelled "
                                       "slice; with \"Structure ends at outer painted "
                                       "slices\" ticked, only the slices between them. On a "
                                       "New model's first scan, with the structure's ends "
                                       "painted, the middles of the widest "
                                       "gaps between painted slices come first, until five "
                                       "are painted. The figure is a slice's score as a share "
                                       "of the most unsure listed one's. Click a line to go "
                                       "there")
        self.uncertain_list.itemClicked.connect(self._jump_to_listed)
        lay.addWidget(self.uncertain_list)
        self.labelled_label = _wrapped("Labelled slices: 0")
        self.forget_btn = _button("Forget slice", self.forget_slice,
                                  "The slice on screen stops being labelled: Retrain no longer"
                                  " learns from it, and the model fills it again")
        lay.addLayout(_row(self.labelled_label, self.forget_btn))
        return box

    def _retrain_section(self) -> QWidget:
        from training.methods import METHODS

        box, lay = _box()
        self.retrain_form = RetrainForm(METHODS)
        # whether the outer painted slices are the ends changes what is suggested next
        self.retrain_form.within_extent.changed.connect(self._rerank)
        lay.addWidget(self.retrain_form.native)
        self.unlabelled_btn = _button("Unlabelled scans folder…", self.choose_unlabelled_folder)
        lay.addWidget(self.unlabelled_btn)
        self.unlabelled_label = _wrapped("Unlabelled scans: the other open images")
        lay.addWidget(self.unlabelled_label)
        self.retrain_btn = _button("Retrain", self.retrain)
        lay.addWidget(self.retrain_btn)
        lay.addWidget(QLabel("Model versions:"))
        self.versions_list = QListWidget()
        self.versions_list.setMaximumHeight(64)
        lay.addWidget(self.versions_list)
        self.use_btn = _button("Use this version", self.use_version)
        self.save_model_btn = _button("Save model", self.save_model)
        lay.addLayout(_row(self.use_btn, self.save_model_btn))
        return box

    def _structures_section(self) -> QWidget:
        self.structures = StructuresPanel(self._names_edited)
        return self.structures

    def _tags_section(self) -> QWidget:
        self.tags_panel = TagsPanel(self.viewer, self)
        return self.tags_panel

    def _session_section(self) -> QWidget:
        box, lay = _box()
        self.save_session_btn = _button("Save session", self.save_session)
        self.open_session_btn = _button("Open session", self.open_session)
        lay.addLayout(_row(self.save_session_btn, self.open_session_btn))
        return box

    def _job_line(self) -> QVBoxLayout:
        """What runs now (Predict, Retrain, Train from tags), its progress, and Cancel."""
        line = QVBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)  # the status line below says the step
        self.cancel_btn = _button("Cancel", self.cancel,
                                  "Stop the training that runs; the model in use stays")
        line.addLayout(_row(self.progress, self.cancel_btn))
        self.status = _wrapped("Idle")
        # a wrapped label at the dock's foot got one line's height and clipped the rest (a
        # waiting Retrain's two lines, seen in a screenshot): room for three
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing() + 4)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        line.addWidget(self.status)
        return line

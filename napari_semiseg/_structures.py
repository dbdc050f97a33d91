"""The Structures list of the dock: the names of the label values, with their colours.

Label value k is row k (row 0 is the background). Names are edited in place; the widget binds
the list to the session (:meth:`napari_semiseg.session.Session.set_class_names`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .colors import class_color

DEFAULT_NEW_NAMES = ["background", "structure 1"]


def _icon(value: int) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor("#000000") if value == 0 else QColor(class_color(value)))
    return QIcon(pix)


class StructuresPanel(QWidget):
    """Editable names of the structures; ``on_change(names)`` is called after every edit."""

    def __init__(self, on_change: Callable[[list[str]], None]) -> None:
        super().__init__()
        self.on_change = on_change
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.hint = QLabel("Label value: name. Double-click a name to rename it. Paint with "
                           "the label value shown, e.g. 1 for the first structure.")
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.itemChanged.connect(lambda item: self._emit())
        layout.addWidget(self.list)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add structure")
        self.add_btn.clicked.connect(self.add_structure)
        self.remove_btn = QPushButton("Remove last")
        self.remove_btn.clicked.connect(self.remove_last)
        row.addWidget(self.add_btn)
        row.addWidget(self.remove_btn)
        layout.addLayout(row)
        self._quiet = False
        self.set_names(DEFAULT_NEW_NAMES)

    def names(self) -> list[str]:
        return [self.list.item(i).text().split(": ", 1)[-1] for i in range(self.list.count())]

    def set_names(self, names: Sequence[str]) -> None:
        self._quiet = True
        self.list.clear()
        for k, name in enumerate(names):
            item = QListWidgetItem(_icon(k), f"{k}: {name}" if k else f"0: {name}")
            if k:  # the background keeps its name
                item.setFlags(item.flags() | Qt.ItemIsEditable)
            self.list.addItem(item)
        self._quiet = False

    def rename(self, value: int, name: str) -> None:
        """Rename label ``value`` (what a double-click and typing does)."""
        self.list.item(value).setText(f"{value}: {name}")

    def add_structure(self) -> None:
        names = self.names()
        names.append(f"structure {len(names)}")
        self.set_names(names)
        self._emit()

    def remove_last(self) -> None:
        names = self.names()
        if len(names) > 2:
            self.set_names(names[:-1])
            self._emit()

    def _emit(self) -> None:
        if self._quiet:
            return
        names = self.names()
        # keep "k: " in front of what the user typed
        self.set_names(names)
        self.on_change(names)

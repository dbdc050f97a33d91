"""Collapsible sections for the dock, so it leaves the window to the scan.

A header button with an arrow shows or hides the section's content. Hiding the content (rather
than animating its maximum height, as superqt's QCollapsible does) lets Qt's layouts size the
word-wrapped texts, which change as the loop goes on.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy, QToolButton, QVBoxLayout, QWidget


class Section(QWidget):
    """A titled part of the dock whose content the user can fold away."""

    def __init__(self, title: str, content: QWidget, expanded: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.header.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.header.toggled.connect(self._toggled)
        self.content = content
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        layout.addWidget(self.header)
        layout.addWidget(content)
        self.header.setChecked(expanded)
        self._toggled(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def expand(self, expanded: bool = True) -> None:
        self.header.setChecked(expanded)

    def _toggled(self, expanded: bool) -> None:
        self.header.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)
        self.content.setVisible(expanded)

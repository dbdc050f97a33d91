"""The dock's Keep: model versions with roll-back, and the session saved and reopened.

A mixin of :class:`napari_semiseg._widget.AssistantWidget`, whose state it reads; what a
session holds and how it is written live in :class:`napari_semiseg.session.Session`.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from ._reader import display_range, scan_axis_labels
from .session import Session


class KeepDock:
    """Versions and session files (a mixin of the assistant dock)."""

    def use_version(self, version_id: str | None = None) -> None:
        s = self.session
        if s is None or self.refused_while_busy():
            return
        if version_id is None:
            item = self.versions_list.currentItem()
            if item is None:
                show_warning("Select a version in the list first.")
                return
            version_id = item.text().split(" ")[0]
        try:
            s.use_version(version_id)
        except Exception as e:
            show_error(str(e))
            return
        self._show_versions()
        self.predict()

    def save_session(self, folder: str | None = None) -> str | None:
        s = self.session
        if s is None:
            show_warning("Nothing to save yet: run Predict first.")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save session in folder")
        if not folder:
            return None
        try:
            out = s.save(folder)
        except Exception as e:
            show_error(f"Could not save the session: {e}")
            return None
        show_info(f"Session saved to {out}")
        return str(out)

    def open_session(self, folder: str | None = None) -> Session | None:
        if self.refused_while_busy():  # the running job's result must land on its own scan
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open session folder")
        if not folder:
            return None
        try:  # this window's own folder stays autosaved unless the reopen succeeds
            s = Session.reopen(folder, self.session)
        except Exception as e:
            show_error(f"Could not open the session: {e}")
            return None
        name = Path(s.image_path).name if s.image_path else "scan"
        layer = self.viewer.add_image(s.image, name=name, scale=s.geometry.scale,
                                      translate=s.geometry.translate,
                                      axis_labels=scan_axis_labels(s.image.ndim),
                                      contrast_limits=display_range(s.image),
                                      metadata={"geometry": s.geometry.to_dict()})
        self._refresh_images()
        self.image_combo.setCurrentText(layer.name)
        self._bind(s, layer)
        self._show_prediction()
        return s

    def _show_versions(self) -> None:
        s = self.session
        self.versions_list.clear()
        if s is None:
            return
        for v in s.versions:
            bits = [v.id]
            bits.append(f"{v.method} {v.steps} steps" if v.method else v.note or "model")
            if v.score is not None and v.parent_score is not None:
                bits.append(f"held-back Dice {v.parent_score:.3f} → {v.score:.3f}")
            if not v.adopted:
                bits.append("not adopted")
            if v.id == s.current:
                bits.append("(in use)")
            self.versions_list.addItem(" · ".join(bits))

"""The dock's Model choice: which model predicts, what its card says, and saving a taught one.

Automatic (the shipped model whose card fits the scan), a library model by name, a checkpoint
file, or New model; Save model puts a taught model, with the finished scans its Retrains learn
from, in the user's models folder, where it joins the Model list. A mixin of
:class:`napari_semiseg._widget.AssistantWidget`, whose state it reads; the choice of a library
model lives in :mod:`napari_semiseg.model_library`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from training.core.atomic import atomic_write
from training.library.model_card import describe

from ._dock_layout import AUTO, CHECKPOINT, NEW
from .default_model import DEFAULT_MODEL, default_model_available
from .finished_scans import companion
from .io import Geometry
from .model_library import LibraryModel, choose, library, user_models_dir
from .session import grey_scan


class ModelDock:
    """Choosing, describing and saving the model (a mixin of the assistant dock)."""

    def _model_chosen(self, index: int = 0, path: str | None = None) -> None:
        if self.refused_while_busy():  # a job holds this session and its model
            return
        self.new_model = self.model_combo.currentText() == NEW
        self.learned_model = None  # the user picked a model: earlier learning is not carried
        self.between.stop(discard=True)
        self._between_again = self._retrain_waits = False
        self.finished.clear()
        if self.new_model:
            self.checkpoint_path = None
            self.model_label.setText("New model: name the structures under Structures, then "
                                     "paint the structure's first and last slices and a few "
                                     "between, with their label values, and Retrain.")
            self._new_model_retrains()
            self.retrain_form.within_extent.value = True
            self.sections["structures"].expand()
            if self._selected_image() is not None:
                self._drop_session()
                self.ensure_session()
                self._update_state()
            return
        chosen = next((m for m in self._library if m.label == self.model_combo.currentText()),
                      None)
        if chosen is not None:  # a library model picked by name
            self.checkpoint_path = str(chosen.path)
            self.model_label.setText(self._card_text(chosen) + self._adopt_finished(chosen.path)
                                     + self._continue_series(chosen.path))
            return
        if self.model_combo.currentText() != CHECKPOINT:
            self.checkpoint_path = None
            self.model_label.setText("The library model that fits the scan is chosen at "
                                     "Predict.")
            return
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                                  "Checkpoints (*.pt *.pth)")
        if not path:
            self.model_combo.setCurrentText(AUTO)
            return
        from training.engine.checkpoint import CheckpointError, read_checkpoint

        try:
            read_checkpoint(path)  # refuse a corrupt file now, not at Predict
        except (CheckpointError, OSError) as e:
            show_error(f"Cannot use this model: {e}")
            self.model_combo.setCurrentText(AUTO)
            return
        self.checkpoint_path = str(path)
        self.model_label.setText(f"{Path(path).name}." + self._adopt_finished(path)
                                 + self._continue_series(path))
        if self.session is not None:
            self.session.add_version(path, note="loaded by the user", make_current=True)
            self._show_versions()

    @staticmethod
    def _card_text(m: LibraryModel) -> str:
        if not m.card:
            return f"{m.path.name}."
        test = m.card.get("test")
        dice = f"; test Dice {100 * float(np.nanmean(test['dice'])):.1f}" if test else ""
        return f"{describe(m.card)}. Trained on {m.card['split']}{dice}."

    def _auto_model(self, layer: Image, geom: Geometry) -> str | None:
        """The library model for this scan, said in the dock; None (and why) if none fits."""
        if not any(m.card for m in self._library):
            return str(DEFAULT_MODEL) if default_model_available() else None
        grey = grey_scan(layer.data, layer.rgb)
        channels = int(layer.data.shape[-1]) if layer.rgb else 1
        spacing = list(geom.spacing)[::-1]
        spacing = [1.0, *spacing] if len(spacing) == 2 else spacing
        best, why = choose(self._library, grey, spacing, channels)
        self.model_label.setText(why)
        if best is None:  # the details go to the notification; the dock keeps what to do
            self.model_label.setText("No shipped model fits this scan: choose New model.")
            show_warning(why)
            return None
        return str(best.path)

    def set_checkpoint(self, path: str) -> None:
        """Choose a checkpoint file as the model (what the file dialog does)."""
        if self.refused_while_busy():
            return
        self.model_combo.setCurrentText(CHECKPOINT)
        self._model_chosen(path=path)


    def save_model(self, path: str | None = None) -> str | None:
        s = self.session
        if s is None or s.current_model_path is None:
            show_warning("No model to save yet.")
            return None
        if path is None:  # the user's models folder: saved models join the Model list
            user_models_dir().mkdir(parents=True, exist_ok=True)
            path, _ = QFileDialog.getSaveFileName(self, "Save model",
                                                  str(user_models_dir() / "model.pt"),
                                                  "Checkpoints (*.pt)")
        if not path:
            return None
        try:
            with open(s.current_model_path, "rb") as fin:
                atomic_write(path, lambda fh: shutil.copyfileobj(fin, fh))
        except OSError as e:
            show_error(f"Could not save the model: {e}")
            return None
        # the scans it learnt from go with it, so that after a restart its Retrains still
        # learn from them (this scan too, as it stands now)
        self._keep_finished(quiet=True)
        try:
            kept = self.finished.save_to(companion(path))
        except OSError as e:
            show_warning(f"Model saved to {path}, but not the scans it learnt from: {e}")
            kept = 0
        else:
            show_info(f"Model saved to {path}" + (f", with the {kept} finished scan(s) its "
                                                  f"Retrains learn from" if kept else ""))
        self._refresh_library()
        return str(path)

    def _refresh_library(self) -> None:
        current = self.model_combo.currentText()
        self._library = library()
        self.model_combo.clear()
        self.model_combo.addItems([AUTO, *[m.label for m in self._library], NEW, CHECKPOINT])
        self.model_combo.setCurrentText(current)

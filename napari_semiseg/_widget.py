"""The Segmentation assistant dock: a thin binding of a Session to napari layers and buttons.

Decisions live in :mod:`napari_semiseg.session`; training runs in another process through
:mod:`napari_semiseg.training_bridge`; this module only wires buttons, layers and notifications.
"""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from training.atomic import atomic_write
from training.model_card import describe
from training.new_model import is_untrained

from ._structures import StructuresPanel
from ._tags import add_tags_panel
from .colors import label_colormap
from .default_model import DEFAULT_MODEL, default_model_available
from .io import NOT_ANNOTATED, Geometry
from .model_library import LibraryModel, choose, library, user_models_dir
from .session import Session, default_folder, grey_scan
from .training_bridge import TrainingBridge, discard_job, make_job

PREDICTION, UNCERTAINTY, CAM = "prediction", "uncertainty", "CAM"
OUTPUT_TAG = "napari_semiseg_output"  # metadata key marking layers the assistant made
# Keep the current model's confident voxels off the corrected slices as pseudo-labels: without
# them one corrected empty slice dragged ACDC Dice from 0.81 to 0.59 (benchmarks/results/
# acdc_simulate.md); with them it rose to 0.83.
ANCHOR_CONFIDENCE = 0.9
AUTO, CHECKPOINT = "Automatic: the library model that fits the scan", "Checkpoint file…"
NEW = "New model (name the structures, then paint)"
# seconds of training before the first preview of a fine-tune without the shape prior (with
# it, the interpolation between the painted slices is shown at once). The training process is
# made ready while the user paints (TrainingBridge.prepare), so training starts at the click.
FIRST_PREVIEW_S = 12.0
NEW_MODEL_STEPS = 200  # from scratch; previews come early (above), then at every third
# A model taught from scratch trains on the interpolation between the painted slices too, and
# its prediction is blended with it (network share 0.3): chosen on 4 LA train scans at K = 5,
# 80.7 Dice against 76.9 without (benchmarks/results/la_new_structure_k5_train.md)
SHAPE_PRIOR_WEIGHT = 0.3


@thread_worker(progress={"desc": "Predicting"})
def _predict(model_path: str, image: np.ndarray, mc_samples: int) -> dict:
    from training.checkpoint import load_checkpoint
    from training.inference import predict_volume

    model, meta = load_checkpoint(model_path)
    return predict_volume(model, meta, image, mc_samples=mc_samples, probabilities=False)


MAX_UNLABELLED = 8  # unlabelled scans per Retrain: more buys little and costs memory


def _scan_files(folder: Path) -> list[Path]:
    from training.io import VOLUME_SUFFIXES, has_suffix

    return sorted(p for p in folder.iterdir() if p.is_file() and has_suffix(p, VOLUME_SUFFIXES))


class AssistantWidget(QWidget):
    """Predict, review uncertain slices, correct, retrain in the background, keep versions."""

    # autosave runs on a writer thread; its failure reaches the UI thread through this signal
    autosave_failed = Signal(str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.autosave_failed.connect(self._on_autosave_error)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.bridge = TrainingBridge()
        self.checkpoint_path: str | None = None
        self.new_model = False  # the user chose New model: the next session starts untrained
        # the model taught on earlier scans: the next scan starts from it
        self.learned_model: str | None = None
        self.unlabelled_folder: str | None = None
        self._image_layer: Image | None = None
        self._worker = None
        self._job = None
        self._pending: deque[dict] = deque()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll_training)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._update_state()

    # ----- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        from training.device import pick_device
        from training.methods import METHODS

        root = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        self.model_combo = QComboBox()
        self._library = library()
        self.model_combo.addItems([AUTO, *[m.label for m in self._library], NEW, CHECKPOINT])
        self.model_combo.activated.connect(self._model_chosen)
        form.addRow("Model", self.model_combo)
        self.model_label = QLabel(Path(DEFAULT_MODEL).name)
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)  # a full row: the chooser's reasons wrap without clipping
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setCurrentText("mean_teacher")
        form.addRow("Retrain method", self.method_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(60)
        form.addRow("Retrain steps", self.steps_spin)
        self.prior_check = QCheckBox("Painted slices' interpolation as a shape prior")
        self.prior_check.setToolTip("Train on the shape interpolation between painted slices "
                                    "too, and blend the prediction with it (on for New model)")
        form.addRow("", self.prior_check)
        self.extent_check = QCheckBox("The structure ends at my first and last painted slices")
        self.extent_check.setToolTip(
            "As for 'fill between slices': paint the structure's first and last slices, and the "
            "Retrain predicts nothing beyond them. Leave off while painting suggested slices.")
        form.addRow("", self.extent_check)
        self.device_label = QLabel(str(pick_device()))
        form.addRow("Device", self.device_label)
        root.addLayout(form)
        self.structures = StructuresPanel(self._names_edited)
        root.addWidget(self.structures)

        self.predict_btn = QPushButton("Predict")
        self.predict_btn.clicked.connect(self.predict)
        root.addWidget(self.predict_btn)

        review = QGroupBox("Review and correct")
        rv = QVBoxLayout(review)
        row = QHBoxLayout()
        self.next_btn = QPushButton("Next uncertain slice")
        self.next_btn.clicked.connect(self.next_uncertain_slice)
        self.accept_btn = QPushButton("Accept slice")
        self.accept_btn.clicked.connect(self.accept_slice)
        row.addWidget(self.next_btn)
        row.addWidget(self.accept_btn)
        rv.addLayout(row)
        rv.addWidget(QLabel("Most uncertain unlabelled slices:"))
        self.uncertain_list = QListWidget()
        self.uncertain_list.setMaximumHeight(90)
        self.uncertain_list.itemClicked.connect(self._jump_to_listed)
        rv.addWidget(self.uncertain_list)
        self.labelled_label = QLabel("Labelled slices: 0")
        self.labelled_label.setWordWrap(True)
        rv.addWidget(self.labelled_label)
        root.addWidget(review)

        train = QGroupBox("Retrain")
        tv = QVBoxLayout(train)
        row = QHBoxLayout()
        self.retrain_btn = QPushButton("Retrain")
        self.retrain_btn.clicked.connect(self.retrain)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.retrain_btn)
        row.addWidget(self.cancel_btn)
        tv.addLayout(row)
        row = QHBoxLayout()
        self.unlabelled_btn = QPushButton("Unlabelled scans folder…")
        self.unlabelled_btn.clicked.connect(lambda: self.choose_unlabelled_folder())
        row.addWidget(self.unlabelled_btn)
        tv.addLayout(row)
        self.unlabelled_label = QLabel("Unlabelled scans: the other open images")
        self.unlabelled_label.setWordWrap(True)
        tv.addWidget(self.unlabelled_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        tv.addWidget(self.progress)
        self.status = QLabel("Idle")
        self.status.setWordWrap(True)
        tv.addWidget(self.status)
        root.addWidget(train)

        versions = QGroupBox("Model versions")
        vv = QVBoxLayout(versions)
        self.versions_list = QListWidget()
        self.versions_list.setMaximumHeight(100)
        vv.addWidget(self.versions_list)
        row = QHBoxLayout()
        self.use_btn = QPushButton("Use this version")
        self.use_btn.clicked.connect(lambda: self.use_version())
        self.save_model_btn = QPushButton("Save model")
        self.save_model_btn.clicked.connect(lambda: self.save_model())
        row.addWidget(self.use_btn)
        row.addWidget(self.save_model_btn)
        vv.addLayout(row)
        root.addWidget(versions)

        row = QHBoxLayout()
        self.save_session_btn = QPushButton("Save session")
        self.save_session_btn.clicked.connect(lambda: self.save_session())
        self.open_session_btn = QPushButton("Open session")
        self.open_session_btn.clicked.connect(lambda: self.open_session())
        row.addWidget(self.save_session_btn)
        row.addWidget(self.open_session_btn)
        root.addLayout(row)
        root.addStretch(1)
        add_tags_panel(self)  # slice tags, Train from tags, CAM / weak mask layers

    # ----- choosing image and model -------------------------------------------------------------

    def _images(self) -> list[Image]:
        # RGB stacks (LGG PNG folders) count: the session keeps their FLAIR channel
        return [ly for ly in self.viewer.layers if isinstance(ly, Image)
                and not ly.metadata.get(OUTPUT_TAG) and ly.ndim in (2, 3)]

    def _refresh_images(self, event: Any = None) -> None:
        current = self.image_combo.currentText()
        self.image_combo.clear()
        names = [ly.name for ly in self._images()]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def _model_chosen(self, index: int = 0, path: str | None = None) -> None:
        self.new_model = self.model_combo.currentText() == NEW
        self.learned_model = None  # the user picked a model: earlier learning is not carried
        if self.new_model:
            self.checkpoint_path = None
            self.model_label.setText("New model: name the structures below, then paint a few "
                                     "slices of the scan with their label values and Retrain.")
            self.steps_spin.setValue(max(self.steps_spin.value(), NEW_MODEL_STEPS))
            self.prior_check.setChecked(True)
            if self._selected_image() is not None:
                self._drop_session()
                self._ensure_session()
                self._update_state()
            return
        chosen = next((m for m in self._library if m.label == self.model_combo.currentText()),
                      None)
        if chosen is not None:  # a library model picked by name
            self.checkpoint_path = str(chosen.path)
            self.model_label.setText(self._card_text(chosen))
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
        from training.checkpoint import CheckpointError, read_checkpoint

        try:
            read_checkpoint(path)  # refuse a corrupt file now, not at Predict
        except (CheckpointError, OSError) as e:
            show_error(f"Cannot use this model: {e}")
            self.model_combo.setCurrentText(AUTO)
            return
        self.checkpoint_path = str(path)
        self.model_label.setText(Path(path).name)
        if self.session is not None:
            self.session.add_version(path, note="loaded by the user", make_current=True)
            self._show_versions()

    @staticmethod
    def _card_text(m: LibraryModel) -> str:
        if not m.card:
            return m.path.name
        test = m.card.get("test")
        dice = f"; test Dice {100 * float(np.mean(test['dice'])):.1f}" if test else ""
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
        self.model_combo.setCurrentText(CHECKPOINT)
        self._model_chosen(path=path)

    def _selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        return next((ly for ly in self._images() if ly.name == name), None)

    def _ensure_session(self) -> Session | None:
        layer = self._selected_image()
        if layer is None:
            show_error("No compatible image: open a grey 2-D or 3-D scan (File > Open) first.")
            return None
        if self.session is not None and self._image_layer is layer:
            return self.session
        geometry = layer.metadata.get("geometry")
        geom = (Geometry.from_dict(geometry) if geometry else
                Geometry.identity(layer.ndim, layer.scale, layer.translate))
        source = geom.source or None
        if self.new_model and self.learned_model is None:
            return self._start_new_model(layer, geom, source)
        model = self.learned_model or self.checkpoint_path or self._auto_model(layer, geom)
        if model is None:
            if not self._library:
                show_error(f"No shipped model found in {DEFAULT_MODEL.parent}; choose a "
                           f"checkpoint file or New model.")
            return None
        try:
            session = Session(grey_scan(layer.data, layer.rgb), geom, image_path=source,
                              folder=default_folder(source or layer.name))
            session.settings.method = self.method_combo.currentText()
            session.settings.judge_retrains = not self.new_model  # see Settings
            session.add_version(model, note="starting model")
        except Exception as e:
            show_error(f"Cannot start a session on {layer.name!r}: {e}")
            return None
        self._bind(session, layer)
        return session

    def _start_new_model(self, layer: Image, geom: Geometry, source: str | None) -> Session | None:
        """A session on an untrained model with the user's structure names, and an empty
        prediction layer (all "not annotated") to paint on."""
        import tempfile

        from training.new_model import new_model

        from .default_model import new_model_start

        names = self.structures.names()
        try:
            session = Session(grey_scan(layer.data, layer.rgb), geom, image_path=source,
                              folder=default_folder(source or layer.name))
            session.settings.method = self.method_combo.currentText()
            session.settings.judge_retrains = False  # taught from scratch (see Settings)
            session.set_class_names(names)
            with tempfile.TemporaryDirectory() as tmp:
                start = new_model(Path(tmp) / "new-model.pt", names,
                                  pretrained=new_model_start())
                session.add_version(start, note="new model (untrained)")
            session.prediction[...] = NOT_ANNOTATED
            session._dirty.add("prediction")
        except Exception as e:
            show_error(f"Cannot start a new model on {layer.name!r}: {e}")
            return None
        self._bind(session, layer)
        self._show_prediction()
        self.status.setText("Paint a few slices (label 1, 2, … as listed under Structures), "
                            "then Retrain.")
        return session

    def _drop_session(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = None

    def _names_edited(self, names: list[str]) -> None:
        s = self.session
        if s is None:
            return
        try:
            s.set_class_names(names)
        except Exception as e:
            show_error(f"Cannot use these names: {e}")
            self.structures.set_names(s.settings.class_names)
            return
        self._show_names()

    def _show_names(self) -> None:
        """Names on the prediction layer: napari shows the one under the cursor."""
        s, layer = self.session, self._layer(PREDICTION)
        if s is None or layer is None or not s.settings.class_names:
            return
        names = s.settings.class_names
        layer.features = {"index": list(range(len(names))), "name": list(names)}

    def _bind(self, session: Session, layer: Image) -> None:
        if self.session is not None and self.session is not session:
            self.session.close()  # frees its folder for another window
        self.session = session
        self._image_layer = layer
        session.write_in_background()  # a brush stroke never waits for a verified write
        session.on_autosave_error = self.autosave_failed.emit
        if session.autosave_error:
            self._on_autosave_error(session.autosave_error)
        for warning in session.warnings:
            show_warning(warning)
        if not session.settings.class_names and session.current_model_path:
            from training.checkpoint import read_meta

            try:
                names = read_meta(session.current_model_path).get("class_names")
                if names:
                    session.set_class_names(names)
            except Exception:  # noqa: BLE001 - names are a convenience; Predict reports errors
                pass
        if session.settings.class_names:
            self.structures.set_names(session.settings.class_names)
        self._show_versions()
        self._show_labelled()

    # ----- layers -------------------------------------------------------------------------------

    def _layer_kwargs(self, name: str) -> dict:
        ref = self._image_layer
        meta = {OUTPUT_TAG: True}
        if self.session is not None:
            meta["geometry"] = self.session.geometry.to_dict()
        kw: dict = {"name": name, "metadata": meta}
        if ref is not None:
            kw.update(scale=ref.scale, translate=ref.translate)
        return kw

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _show_prediction(self, rank: bool = True) -> None:
        """Draw the session's prediction and uncertainty; ``rank=False`` leaves the list of
        uncertain slices to the caller (when a Retrain ends it is drawn on the next tick)."""
        s = self.session
        assert s is not None
        layer = self._layer(PREDICTION)
        data = s.prediction if self._image_layer.ndim == 3 else s.prediction[0]
        if layer is None or not np.shares_memory(layer.data, s.prediction):
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_labels(data, colormap=label_colormap(),
                                           **self._layer_kwargs(PREDICTION))
            layer.events.paint.connect(self._on_paint)
            if self.new_model:
                layer.selected_label = 1
        else:
            layer.refresh()
        self._show_names()
        unc = s.uncertainty
        if unc is None and self.new_model and self._layer(UNCERTAINTY) is None:
            # made now, empty, so the end of the first Retrain only fills it: adding a layer
            # blocked the event loop for 0.2-0.4 s
            unc = np.zeros(s.shape, np.float32)
        if unc is not None:
            unc = unc if self._image_layer.ndim == 3 else unc[0]
            self._set_image_layer(UNCERTAINTY, unc, colormap="inferno", blending="additive",
                                  opacity=0.4)
        if rank:
            self._show_uncertain()
        self.viewer.layers.selection.active = layer

    def _set_image_layer(self, name: str, data: np.ndarray, **kwargs: Any) -> None:
        layer = self._layer(name)
        if layer is None:
            self.viewer.add_image(data, **self._layer_kwargs(name), **kwargs)
        else:
            layer.data = data
            layer.contrast_limits = (float(np.min(data)), float(np.max(data)) or 1.0)

    def _on_paint(self, event: Any) -> None:
        s = self.session
        if s is None:
            return
        known = len(s.settings.class_names)
        s.detect_painted_slices(indices=event.value, axis=self._slicing_axis())
        new = list(range(known, len(s.settings.class_names)))
        if known and new:  # a label the model did not know: a new structure; Retrain grows it
            self.structures.set_names(s.settings.class_names)
            self._show_names()
            show_info(f"Label {', '.join(map(str, new))} is a new structure: it was added as "
                      f"{', '.join(repr(s.settings.class_names[k]) for k in new)} under "
                      f"Structures (rename it there). Retrain adds it to the model.")
        self._show_labelled()

    def _slicing_axis(self) -> int:
        """The axis the user steps through: the first one not on screen."""
        if self.session is None or self.session.image.ndim < 3 or self._image_layer is None \
                or self._image_layer.ndim < 3:
            return 0
        not_shown = list(self.viewer.dims.not_displayed)
        world_axis = not_shown[0] if not_shown else 0
        return world_axis - (self.viewer.dims.ndim - 3)

    def _current_slice(self) -> int:
        axis = self._slicing_axis()
        if self._image_layer is None or self._image_layer.ndim < 3:
            return 0
        world = self.viewer.dims.point[axis + self.viewer.dims.ndim - 3]
        layer = self._image_layer
        i = round((world - layer.translate[axis]) / layer.scale[axis])
        return int(np.clip(i, 0, layer.data.shape[axis] - 1))

    def go_to_slice(self, index: int) -> None:
        layer = self._image_layer
        if layer is None or layer.ndim < 3:
            return
        axis = self._slicing_axis()
        world = layer.translate[axis] + index * layer.scale[axis]
        self.viewer.dims.set_point(axis + self.viewer.dims.ndim - 3, world)

    # ----- actions ------------------------------------------------------------------------------

    def predict(self) -> None:
        s = self._ensure_session()
        if s is None:
            return
        model = s.current_model_path
        if is_untrained(model):
            show_warning("This new model has not learnt anything yet: paint a few slices with "
                         "the structures' label values, then click Retrain.")
            return
        self.predict_btn.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        self.status.setText("Predicting…")
        worker = _predict(model, s.image, s.settings.mc_samples)
        worker.returned.connect(self._on_predicted)
        worker.errored.connect(self._on_predict_error)
        worker.finished.connect(self._predict_finished)
        self._worker = worker
        worker.start()

    def _on_autosave_error(self, message: str) -> None:
        show_error(message)

    def _on_predicted(self, result: dict) -> None:
        s = self.session
        if s is None:
            return
        try:
            s.merge_prediction(result["labels"], result["uncertainty"])
        except Exception as e:  # a prediction that does not fit: nothing was changed
            self._on_predict_error(e)
            return
        self._show_prediction()
        if result.get("cam") is not None:
            self._set_image_layer(CAM, result["cam"], colormap="turbo", blending="additive",
                                  opacity=0.5, visible=False)
        self.status.setText("Prediction ready. Correct a few slices, then Retrain.")

    def _on_predict_error(self, exc: Exception) -> None:
        show_error(f"Prediction failed: {exc}")
        self.status.setText(f"Prediction failed: {exc}")

    def _predict_finished(self) -> None:
        self._worker = None
        self.progress.setRange(0, 1)
        self._update_state()

    def next_uncertain_slice(self) -> int | None:
        s = self.session
        if s is None or s.uncertainty is None:
            show_warning("Run Predict first: there is no uncertainty map yet.")
            return None
        ranked = s.ranked_uncertain_slices(self._slicing_axis())
        self._show_uncertain(ranked)
        if not ranked:
            show_info("Every slice along this axis is labelled.")
            return None
        self.go_to_slice(ranked[0][0])
        return ranked[0][0]

    def accept_slice(self) -> None:
        s = self.session
        if s is None or self._layer(PREDICTION) is None:
            show_warning("Run Predict first: there is no prediction to accept.")
            return
        s.accept_slice(self._slicing_axis(), self._current_slice())
        self._show_labelled()
        self._show_uncertain()

    def retrain(self) -> None:
        s = self.session
        if s is None or self._layer(PREDICTION) is None:
            show_warning("Run Predict first, then correct or accept a few slices.")
            return
        if self.training:
            show_warning("A retrain is already running.")
            return
        others = [grey_scan(ly.data, ly.rgb) for ly in self._images()
                  if ly is not self._image_layer and ly.ndim == s.image.ndim]
        others += self._unlabelled_folder_scans(s.image.ndim)
        steps = self.steps_spin.value()
        prior: dict = {"first_preview_s": FIRST_PREVIEW_S}
        if self.prior_check.isChecked():
            # the interpolation is the first preview, at once; a network a few seconds into
            # training from scratch would show worse (LA sample: 62 against 88 Dice)
            prior = {"prior": "interpolation", "fuse_weight": SHAPE_PRIOR_WEIGHT}
        try:
            job = make_job(s, unlabelled_volumes=others, method=self.method_combo.currentText(),
                           steps=steps, preview_every=max(1, steps // 3),
                           anchor=ANCHOR_CONFIDENCE,
                           class_names=list(s.settings.class_names) or None,
                           within_extent=self.extent_check.isChecked(), **prior)
            self.bridge.start(job)
            self._job = job
        except Exception as e:
            if "job" in locals():
                discard_job(job)  # the scan copy made for a run that never started
            show_error(f"Cannot retrain: {e}")
            return
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.status.setText("Retraining in the background; keep correcting.")
        self._timer.start()
        self._update_state()

    def choose_unlabelled_folder(self, folder: str | None = None) -> None:
        """A folder of unlabelled scans of the same kind: they feed the semi-supervised terms."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of unlabelled scans")
        if not folder:
            return
        self.unlabelled_folder = str(folder)
        n = len(_scan_files(Path(folder)))
        self.unlabelled_label.setText(f"Unlabelled scans: {n} in {Path(folder).name}"
                                      f" (up to {MAX_UNLABELLED} used per Retrain)")

    def _unlabelled_folder_scans(self, ndim: int) -> list[np.ndarray]:
        from training.io import DataError, read_image

        if not self.unlabelled_folder:
            return []
        scans, skipped = [], []
        for f in _scan_files(Path(self.unlabelled_folder))[:MAX_UNLABELLED]:
            try:
                arr, _ = read_image(f)
            except DataError as e:
                skipped.append(str(e))
                continue
            if arr.ndim == ndim:
                scans.append(arr)
        if skipped:
            show_warning(f"{len(skipped)} unlabelled scan(s) skipped: {skipped[0]}")
        return scans

    def cancel(self) -> None:
        if self.bridge.running:
            self.bridge.cancel()
            self.status.setText("Cancelling…")

    @property
    def training(self) -> bool:
        """A retrain is running, or its last results are still being applied."""
        return self.bridge.running or bool(self._pending)

    def _poll_training(self) -> None:
        """One timer tick: at most one heavy event, so the event loop gets back in between."""
        self._pending.extend(self.bridge.poll())
        while self._pending and self._pending[0].get("type") == "progress":
            ev = self._pending.popleft()
            if not any(e.get("type") == "progress" for e in self._pending):
                self._handle_event(ev)  # only the latest progress is worth drawing
        if self._pending:
            self._handle_event(self._pending.popleft())
        if not self.bridge.running and not self._pending:
            self._timer.stop()
            self._update_state()

    def _handle_event(self, ev: dict) -> None:
        s = self.session
        kind = ev.get("type")
        if kind == "progress":
            self.progress.setRange(0, int(ev["total"]))
            self.progress.setValue(int(ev["step"]))
            loss = ev.get("losses", {}).get("loss")
            loss_txt = f" · loss {loss:.3f}" if isinstance(loss, float) else ""
            self.status.setText(f"Step {ev['step']}/{ev['total']}{loss_txt}"
                                f" · ETA {ev.get('eta', 0):.0f} s")
        elif kind == "prediction" and s is not None:
            s.preview_prediction(np.load(ev["path"]))
            self._show_prediction()
        elif kind == "done" and s is not None:
            try:
                version, adopted, reason = s.apply_retrain_result(ev)
            except Exception as e:  # unreadable result files: keep the current model
                self._handle_event({"type": "error", "message": f"its result is unusable: {e}"})
                return
            self._discard_job()
            # drawing waits for the next tick: applying and drawing in one go blocked ~80 ms
            self._pending.appendleft({"type": "show_result", "version": version,
                                      "adopted": adopted, "reason": reason})
        elif kind == "show_result":
            version, adopted, reason = ev["version"], ev["adopted"], ev["reason"]
            self._show_prediction(rank=False)
            self._pending.appendleft({"type": "show_ranking"})  # on the next tick
            self._show_versions()
            if adopted:
                if s is not None:  # the next scan opened starts from what this one taught
                    self.learned_model = s.model_file(version)
                    self.model_label.setText(f"Learnt on {Path(s.image_path or 'this scan').name}"
                                             f" (version {version.id}); the next scan starts "
                                             f"from it.")
                show_info(f"New model version {version.id} is in use. {reason}")
                self.status.setText(f"Done: version {version.id} in use. {reason}")
            else:
                show_warning(f"Retrain not adopted, the previous version stays: {reason}")
                self.status.setText(f"Version {version.id} not adopted: {reason}")
        elif kind == "show_ranking":
            self._show_uncertain()
        elif kind == "warning":  # e.g. the engine saw the network collapse
            show_warning(f"Retrain: {ev.get('message')}")
        elif kind == "cancelled":
            self._discard_job()
            if s is not None:
                s.restore_prediction()
                self._show_prediction()
            show_info(ev.get("message", "Retrain cancelled; the current model is kept."))
            self.status.setText("Cancelled; the current model is kept.")
        elif kind == "error":
            self._discard_job()
            if s is not None:
                s.restore_prediction()
                self._show_prediction()
            show_error(f"Retrain failed: {ev.get('message')}")
            self.status.setText(f"Retrain failed: {ev.get('message')}")

    def _discard_job(self) -> None:
        """The checkpoint was copied into the session; the job's scan copy can go."""
        if self._job is not None:
            discard_job(self._job)
            self._job = None

    def use_version(self, version_id: str | None = None) -> None:
        s = self.session
        if s is None:
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
        show_info(f"Model saved to {path}")
        self._refresh_library()
        return str(path)

    def _refresh_library(self) -> None:
        current = self.model_combo.currentText()
        self._library = library()
        self.model_combo.clear()
        self.model_combo.addItems([AUTO, *[m.label for m in self._library], NEW, CHECKPOINT])
        self.model_combo.setCurrentText(current)

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
                                      metadata={"geometry": s.geometry.to_dict()})
        self._refresh_images()
        self.image_combo.setCurrentText(layer.name)
        self._bind(s, layer)
        self._show_prediction()
        return s

    # ----- dock text ------------------------------------------------------------------------------

    def _show_labelled(self) -> None:
        s = self.session
        if s is None:
            self.labelled_label.setText("Labelled slices: 0")
            return
        parts = [f"axis {a}: {', '.join(map(str, s.labelled_slices(a)))}"
                 for a in sorted(s.labelled) if s.labelled[a]]
        self.labelled_label.setText(f"Labelled slices: {s.n_labelled}"
                                    + (f" ({'; '.join(parts)})" if parts else ""))

    def _show_uncertain(self, ranked: list | None = None) -> None:
        s = self.session
        self.uncertain_list.clear()
        if s is None or s.uncertainty is None:
            return
        if ranked is None:
            ranked = s.ranked_uncertain_slices(self._slicing_axis())
        body = s.starting_slice(self._slicing_axis())
        for i, u in ranked[:10]:
            why = ("the structure's largest section: start here" if i == body
                   else f"mean entropy {u:.3f}")
            self.uncertain_list.addItem(f"slice {i}   {why}")

    def _jump_to_listed(self, item: Any) -> None:
        self.go_to_slice(int(item.text().split()[1]))

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

    def _update_state(self) -> None:
        busy = self.training
        self.retrain_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        self.predict_btn.setEnabled(self._worker is None)
        if not busy and self.session is not None and self._layer(PREDICTION) is not None:
            self.bridge.prepare()  # Retrain is possible: have a process ready with torch loaded

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self.bridge.close()
        if self.session is not None:
            self.session.close()
        self.tags_panel.close_bridge()
        super().closeEvent(event)


def dock_assistant(viewer: Any) -> AssistantWidget:
    """Dock the assistant in ``viewer`` (what `make demo` does)."""
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation assistant", area="right")
    return widget

"""The Segmentation assistant dock: a thin binding of a Session to napari layers and buttons.

Decisions live in :mod:`napari_semiseg.session`; Predict, Retrain and Train from tags share one
job slot (:mod:`napari_semiseg.jobs`), and training runs in another process
(:mod:`napari_semiseg.training_bridge`); this module only wires buttons, layers and
notifications. Its sections' own wiring lives in mixins: the Model choice in
:mod:`napari_semiseg._model_dock`, Review and correct in :mod:`napari_semiseg._review_dock`,
versions and session files in :mod:`napari_semiseg._keep_dock`, a New model's series, carried
from scan to scan, in :mod:`napari_semiseg._series_dock`, and the layout in
:mod:`napari_semiseg._dock_layout`. The sections follow the loop: Model and Predict, Review and
correct, Retrain and versions, Structures, Slice tags, Session; a job line at the bottom shows
what runs.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QWidget

from training.interactive.loop import (
    PAINT_ENDS_EVERY_SCAN,
    REPLAY_FINISHED,
    shows_beyond,
)
from training.interactive.new_model import is_untrained
from training.interactive.retrain import SHAPE_PRIOR_WEIGHT

from ._dock_layout import DockLayout
from ._keep_dock import KeepDock
from ._model_dock import ModelDock
from ._review_dock import ReviewDock
from ._series_dock import SeriesDock
from .between_scans import BetweenScans
from .colors import label_colormap
from .default_model import DEFAULT_MODEL
from .finished_scans import FinishedScans
from .io import NOT_ANNOTATED, Geometry
from .jobs import PREDICT, RETRAIN, Job, JobSlot
from .layer_names import CAM, PREDICTION, UNCERTAINTY
from .retrain_job import (
    MAX_UNLABELLED,
    RETRAIN_PRELOAD,
    make_job,
    run_retrain,
    scan_files,
)
from .session import Session, SessionError, default_folder, grey_scan, scan_channels
from .shortcuts import bind_shortcuts, shortcut_of
from .training_bridge import TrainingBridge

OUTPUT_TAG = "napari_semiseg_output"  # metadata key marking layers the assistant made
# seconds of training before the first preview of a fine-tune without the shape prior (with
# it, the interpolation between the painted slices is shown at once). The training process is
# made ready while the user paints (TrainingBridge.prepare), so training starts at the click.
FIRST_PREVIEW_S = 12.0


# No napari progress bar here: the dock's own job line shows Predict as busy, and starting
# napari's activity-dialog spinner from this worker hung the Qt main thread under load (CI).
@thread_worker
def _predict(model_path: str, session: Session, mc_samples: int) -> dict:
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume

    model, meta = load_checkpoint(model_path)
    image = session.model_input(model_channels(meta))  # grey, or an RGB model's channels
    return predict_volume(model, meta, image, mc_samples=mc_samples, probabilities=False)


class AssistantWidget(ReviewDock, SeriesDock, ModelDock, KeepDock, DockLayout):
    """Predict, review uncertain slices, correct, retrain in the background, keep versions.

    Public API for the dock's other sections (:mod:`napari_semiseg._tags`): ``session``,
    ``jobs``, ``status``, :meth:`ensure_session`, :meth:`current_slice`,
    :meth:`show_image_layer`, :meth:`show_labels_layer`, :meth:`show_session`,
    :meth:`refused_while_busy`, :meth:`start_job`, :meth:`job_progress`.
    """

    # autosave runs on a writer thread; its failure reaches the UI thread through this signal
    autosave_failed = Signal(str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.autosave_failed.connect(self._on_autosave_error)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.jobs = JobSlot(on_change=self._update_state)
        self.bridge = TrainingBridge(run_retrain, preload=RETRAIN_PRELOAD)
        self.checkpoint_path: str | None = None
        self._new_model = False  # the user chose New model: the next session starts untrained
        # the model taught on earlier scans: the next scan starts from it
        self.learned_model: str | None = None
        # the scans the user finished with it: each later Retrain learns from them too
        self.finished = FinishedScans()
        # ... and, as the user opens the next scan, the model trains more on them meanwhile
        self.between = BetweenScans(self.bridge, work_dir=self.finished.folder)
        self._between_again = False  # a scan was finished during a run: run again after it
        self._retrain_waits = False  # Retrain was clicked during a run: it starts after it
        self._predict_again = False  # the model changed during a Predict: predict again
        # the session of a later scan of a New model's series (see _middle_first_scan)
        self._series_session: Session | None = None
        self.unlabelled_folder: str | None = None
        self._image_layer: Image | None = None
        self._worker = None  # the Predict thread
        self._running: Job | None = None  # the Retrain being polled
        self._pending: deque[dict] = deque()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll_training)
        self._build()
        bind_shortcuts(self.viewer, self)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._update_state()

    # ----- the job slot -------------------------------------------------------------------------

    def refused_while_busy(self, training: bool = False) -> bool:
        """True, and a notification saying which job runs, while the slot is taken; for a
        ``training`` job, also while the training between scans runs (one training at a time)."""
        if self.jobs.busy:
            show_warning(self.jobs.why_busy())
            return True
        if training and self.between.running:
            show_warning("Learning from the finished scans is running: wait for it to end, or "
                         "click Cancel (its steps so far are kept).")
            return True
        return False

    def start_job(self, name: str, session: Session, files: Any = None) -> Job | None:
        """Take the job slot for ``session``; None (and a warning) while another job runs."""
        if self.refused_while_busy():
            return None
        return self.jobs.start(name, session, files)

    def job_progress(self, step: int, total: int, text: str) -> None:
        """Show a running job's progress on the dock's job line."""
        self.progress.setRange(0, int(total))
        self.progress.setValue(int(step))
        self.status.setText(text)

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

    def _selected_image(self) -> Image | None:
        name = self.image_combo.currentText()
        return next((ly for ly in self._images() if ly.name == name), None)

    def ensure_session(self) -> Session | None:
        """The session of the selected image, started (and bound to it) if need be."""
        layer = self._selected_image()
        if layer is None:
            show_error("No compatible image: open a grey 2-D or 3-D scan (File > Open) first.")
            return None
        if self.session is not None and self._image_layer is layer:
            return self.session
        if self.refused_while_busy():  # another scan would take this one's place
            return None
        kept = self._keep_finished()
        self._retrain_waits = False  # it was asked for on the scan being left
        geometry = layer.metadata.get("geometry")
        geom = (Geometry.from_dict(geometry) if geometry else
                Geometry.identity(layer.ndim, layer.scale, layer.translate))
        source = geom.source or None
        if self.new_model and self.learned_model is None:
            return self._start_new_model(layer, geom, source)
        # a scan that starts from a model (the library's, or one an earlier scan taught): where
        # the prediction falls short, its ends, middle and then suggested slices are painted,
        # and the prediction stays between the painted ends (chosen on LGG val patients:
        # benchmarks/results/lgg_effort_val_start_*.md)
        self.retrain_form.within_extent.value = PAINT_ENDS_EVERY_SCAN
        model = self.learned_model or self.checkpoint_path or self._auto_model(layer, geom)
        if model is None:
            if not self._library:
                show_error(f"No shipped model found in {DEFAULT_MODEL.parent}; choose a "
                           f"checkpoint file or New model.")
            return None
        try:
            session = Session(grey_scan(layer.data, layer.rgb), geom, image_path=source,
                              channels=scan_channels(layer.data, layer.rgb),
                              folder=default_folder(source or layer.name))
            session.settings.method = self.retrain_form.method.value
            session.settings.judge_retrains = not self.new_model  # see Settings
            session.add_version(model, note="starting model")
        except Exception as e:
            show_error(f"Cannot start a session on {layer.name!r}: {e}")
            return None
        self._series_session = (session if self.new_model and model == self.learned_model
                                else None)
        self._bind(session, layer)
        if kept and self._series_session is session:
            self._train_between_scans(session)
        elif self._series_session is session and self.between.running:
            # moved on again before the run landed, leaving nothing new: it lands here
            self.between.target = (session, session.current)
        return session

    def _start_new_model(self, layer: Image, geom: Geometry, source: str | None) -> Session | None:
        """A session on an untrained model with the user's structure names, and an empty
        prediction layer (all "not annotated") to paint on."""
        import tempfile

        from training.interactive.new_model import NEW_MODEL_CHANNELS, new_model

        from .default_model import new_model_start

        names = self.structures.names()
        try:
            session = Session(grey_scan(layer.data, layer.rgb), geom, image_path=source,
                              channels=scan_channels(layer.data, layer.rgb),
                              folder=default_folder(source or layer.name))
            session.settings.method = self.retrain_form.method.value
            session.settings.judge_retrains = False  # taught from scratch (see Settings)
            session.set_class_names(names)
            # a scan with several channels (the LGG sequences) is read whole or as its grey
            reads = (1 if session.channels is None or NEW_MODEL_CHANNELS == "grey"
                     else int(session.channels.shape[-1]))
            with tempfile.TemporaryDirectory() as tmp:
                start = new_model(Path(tmp) / "new-model.pt", names,
                                  pretrained=new_model_start(), in_channels=reads)
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
            from training.engine.checkpoint import read_meta

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
        self.tags_panel.show_counts()

    # ----- layers -------------------------------------------------------------------------------

    def _layer_kwargs(self, name: str) -> dict:
        ref = self._image_layer
        meta = {OUTPUT_TAG: True}
        if self.session is not None:
            meta["geometry"] = self.session.geometry.to_dict()
        kw: dict = {"name": name, "metadata": meta}
        if ref is not None:
            kw.update(scale=ref.scale, translate=ref.translate, axis_labels=ref.axis_labels)
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
            self.show_image_layer(UNCERTAINTY, unc, colormap="inferno", blending="additive",
                                  opacity=0.4)
        if rank:
            self._show_uncertain()
        self.viewer.layers.selection.active = layer

    def show_image_layer(self, name: str, data: np.ndarray, **kwargs: Any) -> None:
        """Show ``data`` as the assistant's Image layer ``name`` on the scan (made or updated)."""
        updated = self._layer(name) is not None
        layer = self._show_layer(self.viewer.add_image, name, data, **kwargs)
        if updated:  # napari fits the contrast of a new layer itself
            layer.contrast_limits = (float(np.min(data)), float(np.max(data)) or 1.0)

    def show_labels_layer(self, name: str, data: np.ndarray, **kwargs: Any) -> None:
        """Show ``data`` as the assistant's Labels layer ``name`` on the scan (made or updated)."""
        self._show_layer(self.viewer.add_labels, name, data, **kwargs)

    def _show_layer(self, add: Any, name: str, data: np.ndarray, **kwargs: Any) -> Any:
        layer = self._layer(name)
        if layer is None:
            return add(data, **self._layer_kwargs(name), **kwargs)
        layer.data = data
        return layer

    def show_session(self) -> None:
        """Redraw what the session holds: prediction, labelled slices, versions."""
        if self.session is not None:
            self._show_prediction()
            self._show_labelled()
            self._show_versions()

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

    # ----- Predict ------------------------------------------------------------------------------

    def predict(self) -> None:
        if self.refused_while_busy():
            return
        s = self.ensure_session()
        if s is None:
            return
        model = s.current_model_path
        if is_untrained(model):
            show_warning("This new model has not learnt anything yet: paint a few slices with "
                         "the structures' label values, then click Retrain.")
            return
        try:  # a model for RGB stacks on a grey scan: said now, no thread started
            s.model_input(self._model_channels(model))
        except SessionError as e:
            show_error(f"Cannot predict: {e}")
            return
        job = self.jobs.start(PREDICT, s)
        self.progress.setRange(0, 0)  # busy
        self.status.setText("Predicting…")
        worker = _predict(model, s, s.settings.mc_samples)
        worker.returned.connect(lambda result: self._on_predicted(job, result))
        worker.errored.connect(self._on_predict_error)
        worker.finished.connect(lambda: self._predict_finished(job))
        self._worker = worker
        worker.start()

    def _on_autosave_error(self, message: str) -> None:
        show_error(message)

    def _on_predicted(self, job: Job, result: dict) -> None:
        s = job.session  # the scan it was started for, whatever is on screen now
        try:
            s.merge_prediction(result["labels"], result["uncertainty"])
        except Exception as e:  # a prediction that does not fit: nothing was changed
            self._on_predict_error(e)
            return
        if s is not self.session:
            return
        self._show_prediction()
        if result.get("cam") is not None:
            self.show_image_layer(CAM, result["cam"], colormap="turbo", blending="additive",
                                  opacity=0.5, visible=False)
        if self._middle_first_scan(s):
            self.status.setText("Prediction ready. Where it falls short, paint a slice through "
                                "the structure's middle (the list's 'start here' is its largest "
                                "section) and Retrain: where the prediction had it right, the "
                                "suggested slices follow; where not, you are asked for its "
                                "first and last slices too.")
        else:
            self.status.setText("Prediction ready. Where it falls short, paint the structure's "
                                "first, middle and last slices, then Retrain; then the "
                                "suggested slices.")

    def _on_predict_error(self, exc: Exception) -> None:
        show_error(f"Prediction failed: {exc}")
        self.status.setText(f"Prediction failed: {exc}")

    def _predict_finished(self, job: Job) -> None:
        self._worker = None
        self.progress.setRange(0, 1)
        self.jobs.finish(job)
        if self._predict_again:  # the model changed while it ran (training between scans)
            self._predict_again = False
            self.predict()
        elif self._retrain_waits and not self.between.running:
            self._retrain_waits = False
            self.retrain()

    # ----- Retrain ------------------------------------------------------------------------------

    @staticmethod
    def _model_channels(model_path: str | None) -> int:
        """The channels the model reads: 1 (the grey scan), or 3 (every channel of RGB)."""
        from training.engine.checkpoint import read_meta
        from training.engine.inference import model_channels

        try:
            return model_channels(read_meta(model_path)) if model_path else 1
        except Exception:  # an unreadable model is reported by Predict or Retrain themselves
            return 1

    def retrain(self) -> None:
        if self.refused_while_busy():
            return
        if self.between.running:  # two trainings never run at once: this one waits its turn
            self._retrain_waits = True
            p = self.between.progress
            at = f" (step {p['step']}/{p['total']})" if p is not None else ""
            show_info(f"Retrain starts when the learning from your finished scans ends{at}. "
                      f"Cancel stops that learning now, keeping its steps so far, and the "
                      f"Retrain starts at once.")
            self.status.setText(f"Retrain waits for the learning from finished scans{at}; "
                                f"Cancel starts it now.")
            return
        s = self.session
        if s is None or self._layer(PREDICTION) is None:
            show_warning("Run Predict first, then correct or accept a few slices.")
            return
        # the other open scans feed the semi-supervised terms (arrays in memory; a folder of
        # scans goes to the training process as its path: no file is read here)
        rgb_model = s.channels is not None and self._model_channels(s.current_model_path) > 1
        others = [scan_channels(ly.data, ly.rgb) if rgb_model and ly.rgb
                  else grey_scan(ly.data, ly.rgb) for ly in self._images()
                  if ly is not self._image_layer and ly.ndim == s.image.ndim]
        if not self._ends_settled(s):
            return
        form = self.retrain_form
        steps = form.steps.value
        prior: dict = {"first_preview_s": FIRST_PREVIEW_S}
        if form.shape_prior.value:
            # the interpolation is the first preview, at once; a network a few seconds into
            # training from scratch would show worse (LA sample: 62 against 88 Dice)
            prior = {"prior": "interpolation", "fuse_weight": SHAPE_PRIOR_WEIGHT}
        finished = self.finished.files(exclude=s.image_path) if REPLAY_FINISHED else []
        for error in self.finished.take_errors():  # a write in the background that failed
            show_warning(f"Retrains will not learn from {error}")
        try:
            job = make_job(s, unlabelled_volumes=others, unlabelled_folder=self.unlabelled_folder,
                           method=form.method.value, steps=steps,
                           preview_every=max(1, steps // 3),
                           class_names=list(s.settings.class_names) or None,
                           within_extent=form.within_extent.value, finished=finished, **prior)
        except Exception as e:
            show_error(f"Cannot retrain: {e}")
            return
        if job.extent is not None and shows_beyond(s.prediction, job.extent):
            a, b = job.extent  # say what will go, before it goes
            show_info(f"This Retrain predicts nothing beyond slices {a} and {b}, the outer "
                      f"painted slices showing the structure. Untick 'Structure ends at outer "
                      f"painted slices' to keep the prediction beyond them.")
        running = self.jobs.start(RETRAIN, s, files=job)
        try:
            self.bridge.start(job)
        except Exception as e:
            self.jobs.finish(running)  # the scan copy made for a run that never started goes
            show_error(f"Cannot retrain: {e}")
            return
        self._running = running
        self.job_progress(0, steps, "Retraining in the background; keep correcting.")
        self._timer.start()

    def choose_unlabelled_folder(self, folder: str | None = None) -> None:
        """A folder of unlabelled scans of the same kind: they feed the semi-supervised terms."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder of unlabelled scans")
        if not folder:
            return
        self.unlabelled_folder = str(folder)
        n = len(scan_files(folder))
        self.unlabelled_label.setText(f"Unlabelled scans: {n} in {Path(folder).name}"
                                      f" (up to {MAX_UNLABELLED} used per Retrain)")

    def cancel(self) -> None:
        """Stop the training that runs (Retrain or Train from tags); the model stays. The
        training between scans stops too, keeping the steps trained so far."""
        if self.between.running:
            self.between.stop()
            self.status.setText("Stopping the learning from the finished scans; the steps "
                                "trained so far are kept.")
        elif self.bridge.running:
            self.bridge.cancel()
            self.status.setText("Cancelling…")
        elif self.tags_panel.bridge.running:
            self.tags_panel.cancel()

    @property
    def training(self) -> bool:
        """A retrain is running, or its last results are still being applied."""
        return self.bridge.running or bool(self._pending)

    def _poll_training(self) -> None:
        """One timer tick: at most one heavy event, so the event loop gets back in between."""
        if self.between.running:  # the bridge runs the training between scans
            self._poll_between()
            return
        self._pending.extend(self.bridge.poll())
        while self._pending and self._pending[0].get("type") == "progress":
            ev = self._pending.popleft()
            if not any(e.get("type") == "progress" for e in self._pending):
                self._handle_event(ev)  # only the latest progress is worth drawing
        if self._pending:
            self._handle_event(self._pending.popleft())
        if not self.bridge.running and not self._pending:
            self._timer.stop()
            if self._running is not None:
                job, self._running = self._running, None
                self.jobs.finish(job)

    def _handle_event(self, ev: dict) -> None:
        """Apply one event of the running Retrain to the session it was started for; draw it
        only if that session is the one on screen."""
        s = self._running.session if self._running is not None else None
        here = s is not None and s is self.session
        kind = ev.get("type")
        if kind == "progress":
            loss = ev.get("losses", {}).get("loss")
            loss_txt = f" · loss {loss:.3f}" if isinstance(loss, float) else ""
            self.job_progress(ev["step"], ev["total"], f"Retrain: step {ev['step']}/"
                              f"{ev['total']}{loss_txt} · ETA {ev.get('eta', 0):.0f} s")
        elif kind == "warning":
            show_warning(ev["message"])
        elif kind == "prediction" and s is not None:
            s.preview_prediction(np.load(ev["path"]))
            if here:  # the ranking over the whole scan in a thread, as at the end of a Retrain
                self._show_prediction(rank=False)
                self._rank_in_background(s)
        elif kind == "done" and s is not None:
            try:
                version, adopted, reason = s.apply_retrain_result(ev)
            except Exception as e:  # unreadable result files: keep the current model
                self._handle_event({"type": "error", "message": f"its result is unusable: {e}"})
                return
            # drawing waits for the next tick: applying and drawing in one go blocked ~80 ms
            self._pending.appendleft({"type": "show_result", "version": version,
                                      "adopted": adopted, "reason": reason})
        elif kind == "show_result" and s is not None:
            # one piece per tick (drawing the layers, then the list and the message, then the
            # ranking in a thread): in one go they blocked the event loop for up to 177 ms
            if here:
                self._show_prediction(rank=False)
            self._pending.appendleft({**ev, "type": "show_verdict"})
        elif kind == "show_verdict" and s is not None:
            version, adopted, reason = ev["version"], ev["adopted"], ev["reason"]
            if here:
                self._pending.appendleft({"type": "show_ranking"})  # on the next tick
                self._show_versions()
            if adopted:  # the next scan opened starts from what this one taught
                self.learned_model = s.model_file(version)
                self.model_label.setText(f"Learnt on {Path(s.image_path or 'this scan').name}"
                                         f" (version {version.id}); the next scan starts "
                                         f"from it, and its Retrains learn from this scan "
                                         f"as you leave it.")
                show_info(f"New model version {version.id} is in use ({reason}).")
                self.status.setText(f"Done: version {version.id} in use ({reason}).")
            else:
                show_warning(f"Retrain not adopted, the previous version stays: {reason}")
                self.status.setText(f"Version {version.id} not adopted: {reason}")
        elif kind == "show_ranking" and here:
            self._rank_in_background(s)
        elif kind == "warning":  # e.g. the engine saw the network collapse
            show_warning(f"Retrain: {ev.get('message')}")
        elif kind in ("cancelled", "error") and s is not None:
            s.restore_prediction()
            if here:
                self._show_prediction()
            if kind == "cancelled":
                show_info(ev.get("message", "Retrain cancelled; the current model is kept."))
                self.status.setText("Cancelled; the current model is kept.")
            else:
                show_error(f"Retrain failed: {ev.get('message')}")
                self.status.setText(f"Retrain failed: {ev.get('message')}")

    def _update_state(self) -> None:
        """Enable what the slot allows; a control that would change the running job's session
        or model says why it waits."""
        why = self.jobs.why_busy()
        for control, tip in self._guarded():
            control.setEnabled(not why)
            control.setToolTip(why or tip)
        self.cancel_btn.setEnabled(self.jobs.running(RETRAIN) or self.between.running
                                   or self.jobs.running(self.tags_panel.JOB))
        if not why and self.session is not None and self._layer(PREDICTION) is not None:
            self.bridge.prepare()  # Retrain is possible: have a process ready with torch loaded

    def _guarded(self) -> list[tuple[QWidget, str]]:
        """The controls that wait while a job runs, with their tooltips when free."""
        return [
            (self.image_combo, "The scan the assistant works on"),
            (self.model_combo, "The model to predict with, or New model"),
            (self.predict_btn, "Predict the scan with the model, and its uncertainty"),
            (self.retrain_btn, "Fine-tune the model on the labelled slices, in the background"
                               f" ({shortcut_of('retrain')})"),
            (self.use_btn, "Go back (or forward) to the version selected above"),
            (self.open_session_btn, "Open a saved session folder"),
            (self.tags_panel.train_btn, self.tags_panel.TRAIN_TIP),
        ]

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

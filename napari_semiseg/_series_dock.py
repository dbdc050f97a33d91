"""The dock's New-model series: what a scan finished with a taught model leaves to the next.

A New model's series carries its model from scan to scan. Each finished scan teaches the later
Retrains (:mod:`napari_semiseg.finished_scans`); as the user opens the next scan, the model
trains more on the finished ones in the background (:mod:`napari_semiseg.between_scans`), and
on that scan the structure's ends are asked for only where the model missed its middle slice.
A mixin of :class:`napari_semiseg._widget.AssistantWidget`, whose state it reads: the decisions
live in those plain-Python modules, this only wires them to the dock's words and layers.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari.utils.notifications import show_info, show_warning

from training.interactive.loop import ENDS_UNLESS_RIGHT

from .between_scans import Landed
from .finished_scans import companion
from .jobs import PREDICT
from .session import Session

NEW_MODEL_STEPS = 200  # from scratch; previews come early, then at every third
# A New model's first Retrain trains on the painted slices alone: on LA train scans at K = 5,
# mean teacher gave a weaker network (68.5 against 72.2 Dice) in more time (38 s against 28 s)
# (benchmarks/results/la_new_structure_k5_train_unshuffle-2*.md). Its prediction stays within
# the painted ends, as "fill between slices" does: 90.2 against 87.0 keeping the main piece.
NEW_MODEL_METHOD = "supervised"


class SeriesDock:
    """Carrying a New model's series from scan to scan (a mixin of the assistant dock)."""

    def _adopt_finished(self, model_path: str | os.PathLike) -> str:
        """A saved model's finished scans teach its Retrains again; the dock's words for it."""
        n = self.finished.adopt(companion(model_path))
        return (f" Its Retrains learn from the {n} finished scan(s) saved with it." if n
                else "")

    def _continue_series(self, model_path: str | os.PathLike) -> str:
        """A model the user taught from scratch (New model) and saved goes on as that series:
        the next scan starts from it, its Retrains as a New model's (steps, shape prior,
        method, no held-back judgement, the middle slice first). The dock's words for it."""
        from training.engine.checkpoint import CheckpointError, read_meta

        try:
            meta = read_meta(model_path)
        except (CheckpointError, OSError):
            return ""
        if not meta.get("new_model") or meta.get("untrained"):
            return ""
        self.new_model = True
        self.learned_model = str(model_path)
        self._new_model_retrains()
        return (" Taught with New model: the next scan you open goes on from it as its "
                "series did (paint the middle slice first).")

    @property
    def new_model(self) -> bool:
        """The user chose New model, or a model taught with it: a series from scratch."""
        return self._new_model

    @new_model.setter
    def new_model(self, value: bool) -> None:
        self._new_model = bool(value)
        # only such a series trains between scans: greyed out otherwise, so that a library
        # model's user does not read the box as something it does
        self.retrain_form.between_scans.enabled = self._new_model

    def _new_model_retrains(self) -> None:
        """The Retrain settings a New model is taught with (and a saved one goes on with)."""
        form = self.retrain_form
        form.steps.value = max(form.steps.value, NEW_MODEL_STEPS)
        form.shape_prior.value = True
        form.method.value = NEW_MODEL_METHOD

    def _keep_finished(self, quiet: bool = False) -> bool:
        """The scan being left, when it taught the model the next scan starts from: its
        segmentation teaches every later Retrain too. Returns whether it was kept."""
        s = self.session
        if s is None or self.learned_model is None or s.n_labelled == 0:
            return False
        try:
            kept = self.finished.add(s, self._model_channels(self.learned_model))
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the next scan
            name = Path(s.image_path or "the last scan").name
            show_warning(f"Later Retrains will not learn from {name}: {e}")
            return False
        if kept and not quiet:
            show_info(f"Retrains learn from the {len(self.finished)} scan(s) finished so far, "
                      f"as well as from the slices painted on this one.")
        return kept

    def _train_between_scans(self, session: Session) -> None:
        """A New model's series moved on to ``session``'s scan: the carried model trains on the
        finished scans in the background; its model then becomes ``session``'s version."""
        if self.between.running:  # a scan was finished during a run: once it ends, again
            self._between_again = True
            self.between.stop()
            return
        if (self.bridge.running or self.learned_model is None
                or not self.retrain_form.between_scans.value):
            return
        files = self.finished.files()
        for error in self.finished.take_errors():
            show_warning(f"Retrains will not learn from {error}")
        try:
            job = self.between.start(self.learned_model, files, self.retrain_form.method.value,
                                     session)
        except Exception as e:  # noqa: BLE001 - the next scan goes on with the carried model
            show_warning(f"Could not train on the finished scans between scans: {e}")
            return
        if job is None:
            return
        self.model_label.setText(f"Starts from what your {len(files)} finished scan(s) taught. "
                                 f"It learns more from them in the background ({job.steps} "
                                 f"steps); this scan's prediction is refreshed then.")
        self.status.setText("Learning from the finished scans in the background.")
        self._timer.start()
        self._update_state()

    def _poll_between(self) -> None:
        landed = self.between.poll()
        if landed is None:
            p = self.between.progress
            if p is not None and not self.jobs.busy:  # a Predict owns the job line meanwhile
                self.job_progress(p["step"], p["total"],
                                  f"Learning from the finished scans: step {p['step']}/"
                                  f"{p['total']} · ETA {p.get('eta', 0):.0f} s")
            return
        self._timer.stop()  # whatever starts next restarts it
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._between_landed(landed)
        self._update_state()

    def _between_landed(self, landed: Landed) -> None:
        """Carry the run's model on, make it the next scan's version (if that scan still
        starts from the model the run started from) and refresh its prediction; then what
        waited: another run, a Retrain."""
        version = None
        if landed.error is not None:
            show_warning(f"Learning from the finished scans failed: {landed.error}. The model "
                         f"stays as it was.")
            self.status.setText("Learning from the finished scans failed; the model stays "
                                "as it was.")
        elif landed.checkpoint is not None and not landed.discarded:
            if self.learned_model == landed.from_model:
                self.learned_model = landed.checkpoint
            s = self.session
            try:
                version = landed.add_to(s) if s is not None else None
            except Exception as e:  # noqa: BLE001 - e.g. a full disk: the scan goes on as is
                show_warning(f"Could not keep the model learnt between scans: {e}")
            said = (f"The model learnt {landed.steps_done} more steps from your "
                    f"{landed.n_scans} finished scan(s)")
            if version is not None:
                self._show_versions()
                self.model_label.setText(f"Version {version.id}: {landed.steps_done} more steps "
                                         f"on your {landed.n_scans} finished scan(s). Retrains "
                                         f"go on from it.")
                show_info(f"{said} (version {version.id}); the prediction is refreshed, your "
                          f"painted slices are kept.")
            else:
                show_info(f"{said}; the next scan starts from it.")
        if self._between_again and self.session is self._series_session:
            self._between_again = False
            self._train_between_scans(self.session)
            return
        self._between_again = False
        if version is not None:
            self._refresh_after_between()
        elif self._retrain_waits:
            self._retrain_waits = False
            self.retrain()

    def _refresh_after_between(self) -> None:
        """Predict with the new version, now or after the Predict that runs; a waiting Retrain
        starts after it (Retrain's ends check reads the new prediction)."""
        if self.jobs.running(PREDICT):
            self._predict_again = True
        elif not self.jobs.busy:
            self.predict()

    def _middle_first_scan(self, s: Session) -> bool:
        """Whether ``s`` is a later scan of a New model's series: it started from what the
        earlier scans taught, and the structure's ends are asked for only where that model
        missed its middle slice (:data:`training.interactive.loop.ENDS_UNLESS_RIGHT`, chosen
        for such series only)."""
        return s is self._series_session

    def _ends_settled(self, s: Session) -> bool:
        """Before a Retrain on a later scan of a New model's series with one slice painted
        (the middle) and the ends box ticked: where the model had that slice right, the box is
        unticked and the Retrain goes on without ends; where it had not, the user is asked for
        the ends first. Returns whether the Retrain may start."""
        form = self.retrain_form
        if not (form.within_extent.value and self._middle_first_scan(s) and s.n_labelled == 1):
            return True
        [(axis, index)] = s.labelled_slices()
        agree = s.model_agreement(axis, index)
        if agree is None:
            return True
        if agree >= ENDS_UNLESS_RIGHT:
            form.within_extent.value = False
            show_info(f"The prediction had slice {index} right (Dice {agree:.2f}): no ends "
                      f"needed on this scan. After this Retrain, paint the suggested slices.")
            return True
        message = (f"The prediction missed slice {index} (Dice {agree:.2f}): paint the "
                   f"structure's first and last slices too, then Retrain, or untick 'Structure "
                   f"ends at outer painted slices' to Retrain now.")
        show_warning(message)
        self.status.setText(message)
        return False

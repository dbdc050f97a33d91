"""The dock's Review and correct: where the user is, where to go next, which slices are theirs.

The slice on screen along the axis the user steps through, the ranked uncertain slices (ranked
off the UI thread), Next uncertain slice, Accept slice and Forget slice, and the dock's line of
labelled slices. A mixin of :class:`napari_semiseg._widget.AssistantWidget`, whose state it
reads; the decisions live in :class:`napari_semiseg.session.Session`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info, show_warning

from ._reader import scan_axis_labels
from .layer_names import PREDICTION
from .session import Session


@thread_worker
def _rank(session: Session, axis: int, within_ends: bool) -> list:
    """The ranked uncertain slices along ``axis``, off the UI thread."""
    return session.ranked_uncertain_slices(axis, within_ends)


class ReviewDock:
    """Review and correct, for the assistant dock (see the module's docstring)."""

    def _slicing_axis(self) -> int:
        """The axis the user steps through: the first one not on screen."""
        if self.session is None or self.session.image.ndim < 3 or self._image_layer is None \
                or self._image_layer.ndim < 3:
            return 0
        not_shown = list(self.viewer.dims.not_displayed)
        world_axis = not_shown[0] if not_shown else 0
        return world_axis - (self.viewer.dims.ndim - 3)

    def _within_ends(self) -> bool:
        """Whether the outer painted slices are the structure's ends (the Retrain box)."""
        return bool(self.retrain_form.within_extent.value)

    def current_slice(self) -> int:
        """The index of the slice on screen, along the axis the user steps through."""
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

    def next_uncertain_slice(self) -> int | None:
        s = self.session
        if s is None or s.uncertainty is None:
            show_warning("Run Predict first: there is no uncertainty map yet.")
            return None
        ranked = s.ranked_uncertain_slices(self._slicing_axis(), self._within_ends())
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
        s.accept_slice(self._slicing_axis(), self.current_slice())
        self._show_labelled()
        self._show_uncertain()

    def forget_slice(self) -> None:
        """Undo a slice's labelling (a slip of the brush, or an Accept too soon)."""
        s = self.session
        axis, index = self._slicing_axis(), self.current_slice()
        if s is None or not s.is_labelled(axis, index):
            show_info(f"Slice {index} is not labelled: there is nothing to forget.")
            return
        s.unmark_labelled(axis, index)
        self._show_labelled()
        self._show_uncertain()
        self.status.setText(f"Slice {index} is no longer labelled: Retrain will not learn from "
                            "it, and the next prediction fills it.")

    def _show_labelled(self) -> None:
        s = self.session
        if s is None:
            self.labelled_label.setText("Labelled slices: 0")
            return
        names = scan_axis_labels(s.image.ndim)
        parts = [f"{names[a] if names else f'axis {a}'}: "
                 f"{', '.join(map(str, s.labelled_slices(a)))}"
                 for a in sorted(s.labelled) if s.labelled[a]]
        earlier = self.finished.painted_per_scan(exclude=s.image_path) if self.new_model else []
        self.labelled_label.setText(
            f"Labelled slices: {s.n_labelled}" + (f" ({'; '.join(parts)})" if parts else "")
            + (f". Painted on the series' earlier scans: {', '.join(map(str, earlier[-8:]))}"
               if earlier else ""))

    def _rank_in_background(self, s: Session) -> None:
        """Rank the uncertain slices in a thread: over a whole scan it blocked the event loop
        for ~75 ms at the end of each Retrain (benchmarks/new_model_refresh.py)."""
        if s.uncertainty is None:
            self.uncertain_list.clear()
            return
        axis = self._slicing_axis()
        worker = _rank(s, axis, self._within_ends())

        def show(ranked: list) -> None:
            if self.session is not s:  # another scan is on screen now
                return
            try:
                self._show_uncertain(ranked)
            except RuntimeError:  # the dock was closed while ranking: nothing to show it in
                pass

        worker.returned.connect(show)
        worker.errored.connect(lambda e: show_warning(f"Could not rank uncertain slices: {e}"))
        worker.start()

    def _rerank(self, *_: Any) -> None:
        if self.session is not None:
            self._rank_in_background(self.session)

    def _show_uncertain(self, ranked: list | None = None) -> None:
        s = self.session
        self.uncertain_list.clear()
        if s is None or s.uncertainty is None:
            return
        axis = self._slicing_axis()
        if ranked is None:
            ranked = s.ranked_uncertain_slices(axis, self._within_ends())
        ranked = ranked[:10]
        for (i, _), why in zip(ranked, s.why_suggested(ranked, axis, self._within_ends()),
                               strict=True):
            self.uncertain_list.addItem(f"slice {i}   {why}")

    def _jump_to_listed(self, item: Any) -> None:
        self.go_to_slice(int(item.text().split()[1]))

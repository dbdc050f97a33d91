"""Keyboard shortcuts of the correction loop.

Bound on the viewer, so that they work while the brush is in the canvas: a clinician who
corrects slice after slice need not move to the dock between them. None of these keys is one of
napari's own on any layer (a layer's key wins over the viewer's: Shift-A, which accepted a slice
before, selects every point when a Points layer is active); the tag panel's are Shift-Y and
Shift-N.
"""

from __future__ import annotations

import weakref
from typing import Any

# key -> the dock's method it calls; the method's button tooltip names the key
SHORTCUTS = {
    "Shift-U": "next_uncertain_slice",
    "Shift-Enter": "accept_slice",
    "Shift-R": "retrain",
}


def shortcut_of(method: str) -> str:
    """The key that calls ``method``, spelled as the user presses it (e.g. ``Shift+U``)."""
    for key, name in SHORTCUTS.items():
        if name == method:
            return key.replace("-", "+")
    raise KeyError(method)


def bind_shortcuts(viewer: Any, dock: Any, keys: dict[str, str] = SHORTCUTS) -> None:
    """Bind ``keys`` on ``viewer`` to ``dock``'s methods, until the dock is destroyed.

    The viewer holds only a weak reference, and the keys are unbound when Qt destroys the
    dock, so a closed dock never answers a key press (nor takes away another dock's keys).
    """
    ref = weakref.ref(dock)
    ours = {}
    for key, method in keys.items():
        def press(_viewer: Any, method: str = method) -> None:
            widget = ref()
            if widget is not None:
                getattr(widget, method)()

        viewer.bind_key(key, press, overwrite=True)
        ours[key] = press
    dock.destroyed.connect(lambda *_: unbind_shortcuts(viewer, ours))


def unbind_shortcuts(viewer: Any, ours: dict[str, Any]) -> None:
    """Unbind each key still bound to the function in ``ours``; leave others' in place."""
    for key, press in ours.items():
        unbound = viewer.bind_key(key, None, overwrite=True)
        if unbound is not None and unbound is not press:  # a later dock's: give it back
            viewer.bind_key(key, unbound, overwrite=True)

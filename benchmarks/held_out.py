"""What the choice scripts share: a model and the held-out scans it is scored on.

``postprocess_choice.py``, ``mirror_choice.py`` (and their kin) choose one setting of a model's
card on a split or on named patients; this reads the same arguments and yields the same scans
for each, as the model reads them (every channel of an RGB scan for a model that reads three).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None, help="split name; '' = every scan")
    p.add_argument("--patients", default="", help="comma-separated patients instead of a split")
    p.add_argument("--out", required=True)


def model_and_scans(a: argparse.Namespace):
    """(model, meta, scans): scans yields (name, image, labels, spacing, channels)."""
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels
    from training.library.model_card import dataset_scans

    model, meta = load_checkpoint(a.model, device="cpu")
    patients = [s for s in a.patients.split(",") if s] or None
    scans = dataset_scans(a.data, a.split or None, patients,
                          keep_channels=model_channels(meta) > 1)
    return model, meta, scans


def write_report(path: str, lines: list[str]) -> int:
    """Write a choice script's Markdown ``lines`` to ``path``, echo them, and return 0."""
    text = "\n".join(lines) + "\n"
    with open(path, "w") as fh:
        fh.write(text)
    print(text)
    return 0

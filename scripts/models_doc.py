"""Write docs/models.md from the cards inside the shipped checkpoints (run after `semiseg card`).

    .venv/bin/python scripts/models_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = """# Shipped models

Each model below was trained by this project on the train split of one data set in
`../shared/data` with the command shown, and carries this card in its checkpoint
(`meta["card"]`, read with `torch.load(weights_only=True)`). The Dice and HD95 were measured on
the held-out test split by `semiseg card`, which also records the training scans' statistics
that the dock's Automatic choice compares a scan with. ACDC stores no spacing (1 mm
placeholders), so its HD95 is in voxels.

All three were trained with the project's one recipe (native-grid patches, orientation-keeping
augmentation, AdamW with warm-up and poly decay, a moving average of the weights, Gaussian
sliding-window predict; each card's "recipe" line). Every prediction of a model gets the
clean-up its card names (`meta["postprocess"]`: each structure's largest 3-D piece, or none),
chosen on validation scans by `benchmarks/postprocess_choice.py` before the test split was
measured; the test Dice below includes it. `semiseg predict --no-clean-up` writes the
network's labels as they are.
"""


def main() -> int:
    from napari_semiseg.model_library import library
    from training.library.model_card import render_markdown

    parts = [HEADER]
    for m in library(include_user=False):
        if m.card:
            parts.append(render_markdown(m.card, m.path.name))
    out = ROOT / "docs" / "models.md"
    out.write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

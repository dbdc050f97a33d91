"""Register fill alone on the slices the loop painted vs evenly spaced slices (S3 scans).

Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/results/uncertainty_of_shown/fill_check.py
"""
from training.bench.effort import load_cases
from training.engine.metrics import mean_dice
from training.interactive.image_priors import fill_between_slices
from training.interactive.interpolation import even_slices
from training.interactive.loop import sparse_labels

cases, names = load_cases("../shared/data/left_atrium_2018", 4, "train", offset=16)
loops = {
    "5FKQL4K14KCB72Y8YMC2": [17, 44, 70, 31, 37, 24, 40, 34],
    "5QFK2PMHNX7UALK52NNA": [27, 54, 82, 41, 48, 34, 37, 51],
}
for name, image, truth in cases:
    if name not in loops:
        continue
    sl = loops[name]
    for k in range(3, 9):
        painted = sl[:k]
        fill = fill_between_slices(sparse_labels(truth, painted, 0), image, "register")
        ev = [int(z) for z in even_slices(truth, k, 0)]
        fill_ev = fill_between_slices(sparse_labels(truth, ev, 0), image, "register")
        print(name[:4], k, "loop slices", sorted(painted), f"{mean_dice(fill, truth):.3f}",
              "| even", ev, f"{mean_dice(fill_ev, truth):.3f}", flush=True)

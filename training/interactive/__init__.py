"""The annotation loop: one Retrain (fine-tune, judge on held-back slices), shape interpolation
between painted slices, a New model and its pretraining."""

"""The names of the layers the assistant adds beside the scan (the user sees them in the list)."""

PREDICTION, UNCERTAINTY, CAM = "prediction", "uncertainty", "CAM"

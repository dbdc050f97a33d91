"""Weak supervision from slice tags: tags, localisation maps (intensity anomaly, CAM), weak masks,
and the tags-to-network pipeline."""

"""The building blocks of training and prediction: data and the recipe (native-grid patches,
batched augmentation), networks, losses, metrics, inference, post-processing and checkpoints."""

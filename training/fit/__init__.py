"""The training loop that runs a method: progress events, cancellation, periodic atomic
checkpoints, resuming, collapse warnings, DDP."""

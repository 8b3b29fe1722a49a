"""A training run's machinery: callbacks, checkpoints, the run folder, its lock, its log and the console."""

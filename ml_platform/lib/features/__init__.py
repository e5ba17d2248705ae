"""Feature engineering: point-in-time weather, trailing aggregates and targets."""

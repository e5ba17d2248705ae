"""Out-of-time evaluation of models: metrics, baselines, gates and plots."""

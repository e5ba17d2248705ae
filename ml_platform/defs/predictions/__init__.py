"""Batch scoring: the champion's predictions for each day's flights."""

"""Monitoring assets (profiles, drift report) and the retrain sensor."""

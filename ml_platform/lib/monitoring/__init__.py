"""Monitoring: whylogs profiles, drift scores, alerts."""

"""Sensors that let the provider and the deltas drive the work."""

"""Experiment configs (configs/*.json) and the drivers of the make targets."""

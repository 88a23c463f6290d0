"""Runners execute one action on one target and report the outcome as data (StepResult)."""

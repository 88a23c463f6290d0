"""Celery task names: the only thing the API and the worker share about tasks."""

RUN_BRANCH = "opsconductor.run_branch"
SWEEP = "opsconductor.sweep"
FIRE_DUE_JOBS = "opsconductor.fire_due_jobs"

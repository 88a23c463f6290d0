"""Celery task names: the only thing the API, the worker and the maintenance loop share about tasks."""

RUN_BRANCH = "opsconductor.run_branch"
KILL_ORPHAN = "opsconductor.kill_orphan"  # kill what a lost branch left running on its target

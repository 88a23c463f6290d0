"""Execution and branch lookups: by serial, search, bulk, per-job history."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("executions", __name__)

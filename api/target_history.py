"""Per-target performance and execution history."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("target_history", __name__)

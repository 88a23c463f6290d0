"""Execution analytics over periods and per job."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("analytics", __name__)

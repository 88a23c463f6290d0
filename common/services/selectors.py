"""Target selectors: `{"tags_all": [...], "tags_any": [...], "name": "web-*"}` resolved, when a job is
executed, to the live and enabled targets that match every given part.

Tags are a JSON list column. PostgreSQL filters them in SQL (jsonb `@>` for tags_all, `?|` for tags_any;
no index on tags, so a sequential scan of the targets table); SQLite gets only the coarse filter (live,
enabled, name LIKE) and the tags are checked in Python on the rows it returns: one pass over the
live enabled targets whose names match, which is every live enabled target when no name is given.
Both backends then check every part again in Python, so they cannot disagree."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.orm import Session

from common.errors import ValidationFailed
from common.models import Target
from common.services.pagination import escape_like


def clean(selector: dict[str, Any] | None) -> dict[str, Any] | None:
    """The selector as stored and shown: only the parts that were given, non-empty."""
    if not selector:
        return None
    kept = {k: selector[k] for k in ("tags_all", "tags_any", "name") if selector.get(k)}
    return kept or None


def _glob(pattern: str) -> re.Pattern[str]:
    """`*` any run of characters, `?` exactly one; everything else literal; case-insensitive."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _like(pattern: str) -> str:
    return "".join("%" if c == "*" else "_" if c == "?" else escape_like(c) for c in pattern).lower()


def matches(selector: dict[str, Any], target: Target) -> bool:
    tags = set(target.tags or [])
    if selector.get("tags_all") and not set(selector["tags_all"]) <= tags:
        return False
    if selector.get("tags_any") and not set(selector["tags_any"]) & tags:
        return False
    name = selector.get("name")
    return not name or _glob(name).fullmatch(target.name) is not None


def select_targets(session: Session, selector: dict[str, Any]) -> list[Target]:
    """The live, enabled targets the selector matches, by id; a 422 when there are none."""
    stmt = select(Target).where(Target.archived_at.is_(None), Target.enabled.is_(True)).order_by(Target.id)
    if selector.get("name") and selector["name"].isascii():  # SQLite's lower() folds ASCII only
        stmt = stmt.where(Target.name.ilike(_like(selector["name"]), escape="\\"))
    if session.get_bind().dialect.name == "postgresql":
        tags = type_coerce(Target.tags, JSONB)
        if selector.get("tags_all"):
            stmt = stmt.where(tags.contains(list(selector["tags_all"])))
        if selector.get("tags_any"):
            stmt = stmt.where(tags.has_any(array(list(selector["tags_any"]))))
    found = [t for t in session.scalars(stmt) if matches(selector, t)]
    if not found:
        raise ValidationFailed("target_selector matched no enabled target",
                               {"field": "target_selector", "selector": selector})
    return found

"""Idempotency keys of execute and retry: the same key from the same user for the same request within
KEY_TTL gives back the execution the first request made. The key row is inserted in the transaction
that makes the execution, so the unique (user_id, key) constraint lets exactly one of two simultaneous
requests commit; the other rolls back and answers with the winner's execution."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from common.errors import ValidationFailed
from common.models import IdempotencyKey, utcnow

KEY_TTL = timedelta(hours=24)
HEADER = "Idempotency-Key"


def request_hash(method: str, path: str, body: Any, secret: str) -> str:
    """What was asked: the method, the path and the body as canonical JSON, as HMAC-SHA256 hex keyed
    with the platform's secret (a body may carry secret parameters: its hash is no oracle for them)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = f"{method.upper()} {path}\n{canonical}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def replay(session: Session, user_id: int, key: str, fingerprint: str) -> int | None:
    """The id of the execution this user's key made within KEY_TTL, or None for a key not in use
    (the user's expired keys are deleted on the way). A key in use for another request is a 422."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                 IdempotencyKey.created_at < utcnow() - KEY_TTL))
    used = session.execute(select(IdempotencyKey.request_hash, IdempotencyKey.execution_id)
                           .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)).first()
    if used is None:
        return None
    if used.request_hash != fingerprint:
        raise ValidationFailed(f"This {HEADER} was used for a different request in the last 24 hours; "
                               "send a new key for a new request",
                               {"field": HEADER, "location": "header", "received": key})
    return used.execution_id


def remember(session: Session, user_id: int, key: str, fingerprint: str, execution_id: int) -> None:
    """Record the key with the execution it made; raises IntegrityError (at this flush, or on
    PostgreSQL once a simultaneous holder of the same key commits) when another request took it."""
    session.add(IdempotencyKey(user_id=user_id, key=key, request_hash=fingerprint, execution_id=execution_id,
                               created_at=utcnow()))
    session.flush()

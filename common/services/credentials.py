"""Credentials: encrypted on write, decrypted only for a runner, never returned."""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.crypto import SecretBox
from common.errors import Conflict, NotFound, ValidationFailed
from common.models import Credential, Target
from common.services.pagination import Page, PageRequest, paginate
from common.services.refs import id_in_range


def _validate_secret(auth_type: str, private_key: str | None, password: str | None) -> str:
    if auth_type == "key":
        if not private_key:
            raise ValidationFailed("A key credential needs private_key", {"field": "private_key"})
        if "PRIVATE KEY" not in private_key:
            raise ValidationFailed("private_key is not a PEM/OpenSSH private key",
                                   {"field": "private_key", "expected_format": "-----BEGIN ... PRIVATE KEY-----"})
        return private_key
    if not password:
        raise ValidationFailed("A password credential needs password", {"field": "password"})
    return password


def create_credential(session: Session, box: SecretBox, *, name: str, username: str, auth_type: str,
                      private_key: str | None = None, password: str | None = None,
                      passphrase: str | None = None, description: str | None = None,
                      allowed_hosts: list[str] | None = None) -> Credential:
    if session.scalar(select(Credential.id).where(Credential.name == name)) is not None:
        raise Conflict("A credential with that name already exists", {"field": "name"})
    secret = _validate_secret(auth_type, private_key, password)
    cred = Credential(name=name, username=username, auth_type=auth_type, secret_encrypted=box.encrypt(secret),
                      passphrase_encrypted=box.encrypt(passphrase) if passphrase else None,
                      description=description, allowed_hosts=list(allowed_hosts or []))
    session.add(cred)
    session.flush()
    return cred


def get_credential(session: Session, credential_id: int) -> Credential:
    cred = session.get(Credential, credential_id) if id_in_range(credential_id) else None
    if cred is None:
        raise NotFound("Credential not found", {"credential_id": credential_id})
    return cred


def list_credentials(session: Session, req: PageRequest) -> Page:
    return paginate(session, select(Credential), req, {"created_at": Credential.created_at,
                                                       "name": Credential.name, "id": Credential.id}, Credential.id)


def update_credential(session: Session, box: SecretBox, credential_id: int, changes: dict) -> Credential:
    cred = get_credential(session, credential_id)
    if "name" in changes and changes["name"] != cred.name:
        if session.scalar(select(Credential.id).where(Credential.name == changes["name"])) is not None:
            raise Conflict("A credential with that name already exists", {"field": "name"})
        cred.name = changes["name"]
    for field in ("username", "description", "allowed_hosts"):
        if field in changes:
            setattr(cred, field, changes[field])
    secret_fields = {"auth_type", "private_key", "password", "passphrase"} & changes.keys()
    if secret_fields == {"passphrase"} and cred.auth_type == "key":
        # a re-encrypted key file: the stored key stays, only its passphrase changes
        cred.passphrase_encrypted = box.encrypt(changes["passphrase"]) if changes["passphrase"] else None
    elif secret_fields:
        auth_type = changes.get("auth_type", cred.auth_type)
        secret = _validate_secret(auth_type, changes.get("private_key"), changes.get("password"))
        cred.auth_type = auth_type
        cred.secret_encrypted = box.encrypt(secret)
        cred.passphrase_encrypted = box.encrypt(changes["passphrase"]) if changes.get("passphrase") else None
    if secret_fields or "username" in changes:
        cred.version += 1
    session.flush()
    return cred


def delete_credential(session: Session, credential_id: int) -> None:
    cred = get_credential(session, credential_id)
    in_use = session.scalars(select(Target.target_serial).where(
        Target.credential_id == credential_id, Target.archived_at.is_(None)).limit(20)).all()
    if in_use:
        raise Conflict("Credential is used by targets; change or delete them first",
                       {"credential_id": credential_id, "targets": list(in_use)})
    session.execute(update(Target).where(Target.credential_id == credential_id).values(credential_id=None))
    session.delete(cred)
    session.flush()

"""Credentials, for administrators. Secrets are accepted, encrypted and never returned."""
from __future__ import annotations

from flask import Blueprint

from api.context import platform, transaction
from api.endpoint import ADMIN, endpoint
from api.schemas.base import PageOut
from api.schemas.credentials import CredentialIn, CredentialOut, CredentialQuery, CredentialUpdate
from api.serialize import page_of
from common.services import credentials
from common.services.pagination import PageRequest

bp = Blueprint("credentials", __name__, url_prefix="/api/credentials")


@bp.get("")
@endpoint("List credentials (never their secrets)", query=CredentialQuery, response=PageOut[CredentialOut],
          roles=ADMIN)
def list_credentials(query: CredentialQuery):
    with transaction() as session:
        page = credentials.list_credentials(session, PageRequest(query.page, query.per_page, query.sort, query.order))
        return page_of(page, CredentialOut)


@bp.post("")
@endpoint("Store a key or password credential, encrypted at rest", body=CredentialIn, response=CredentialOut,
          status=201, roles=ADMIN, errors=(409, 422))
def create_credential(body: CredentialIn):
    with transaction() as session:
        cred = credentials.create_credential(session, platform().box, **body.model_dump())
        return CredentialOut.model_validate(cred)


@bp.get("/<int:credential_id>")
@endpoint("Get a credential (never its secret)", response=CredentialOut, roles=ADMIN, errors=(404,))
def get_credential(credential_id: int):
    with transaction() as session:
        return CredentialOut.model_validate(credentials.get_credential(session, credential_id))


@bp.patch("/<int:credential_id>")
@endpoint("Change a credential; a new secret replaces the old one", body=CredentialUpdate,
          response=CredentialOut, roles=ADMIN, errors=(404, 409, 422))
def update_credential(credential_id: int, body: CredentialUpdate):
    with transaction() as session:
        cred = credentials.update_credential(session, platform().box, credential_id,
                                             body.model_dump(exclude_unset=True))
        return CredentialOut.model_validate(cred)


@bp.delete("/<int:credential_id>")
@endpoint("Delete a credential no live target uses", status=204, roles=ADMIN, errors=(404, 409))
def delete_credential(credential_id: int):
    with transaction() as session:
        credentials.delete_credential(session, credential_id)
    return "", 204

"""``client.credentials``: SSH credentials (admin only); secrets go in and never come back."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional

from enabledrm_sdk._transport import segment
from enabledrm_sdk.models import Credential, Page
from enabledrm_sdk.resources._base import Resource, body, page_params


class CredentialsResource(Resource):
    def list(self, *, page: Optional[int] = None, per_page: Optional[int] = None, sort: Optional[str] = None,
             order: Optional[str] = None) -> Page[Credential]:
        return self._page("/credentials", Credential, page_params(page, per_page, sort, order))

    def iterate(self, *, per_page: int = 100, sort: Optional[str] = None,
                order: Optional[str] = None) -> Iterator[Credential]:
        return self._iterate(lambda n: self.list(page=n, per_page=per_page, sort=sort, order=order))

    def get(self, credential_id: int) -> Credential:
        return Credential(self._t.json("GET", f"/credentials/{segment(credential_id)}"))

    def create(self, name: str, username: str, auth_type: str, *, private_key: Optional[str] = None,
               passphrase: Optional[str] = None, password: Optional[str] = None,
               description: Optional[str] = None, allowed_hosts: Optional[List[str]] = None,
               **fields: Any) -> Credential:
        """Store a credential: ``auth_type="key"`` with ``private_key`` (and optional ``passphrase``),
        or ``auth_type="password"`` with ``password``. ``allowed_hosts`` (CIDRs, hostname globs) are
        where operators may point it; without it only administrators may attach it to a target."""
        return Credential(self._t.json("POST", "/credentials", json=body(
            fields, name=name, username=username, auth_type=auth_type, private_key=private_key,
            passphrase=passphrase, password=password, description=description, allowed_hosts=allowed_hosts)))

    def update(self, credential_id: int, **fields: Any) -> Credential:
        """Change fields; a new secret replaces the old one."""
        return Credential(self._t.json("PATCH", f"/credentials/{segment(credential_id)}", json=dict(fields)))

    def delete(self, credential_id: int) -> None:
        """Delete a credential no live target uses (else Conflict)."""
        self._t.json("DELETE", f"/credentials/{segment(credential_id)}")

"""``client.users``: user administration (admin only)."""
from __future__ import annotations

from typing import Any, Iterator, Optional

from enabledrm_sdk._transport import segment
from enabledrm_sdk.models import Page, User
from enabledrm_sdk.resources._base import Resource, body, page_params


class UsersResource(Resource):
    def list(self, *, page: Optional[int] = None, per_page: Optional[int] = None, sort: Optional[str] = None,
             order: Optional[str] = None) -> Page[User]:
        """One page of users (``sort``: created_at | username | id; ``order``: asc | desc)."""
        return self._page("/users", User, page_params(page, per_page, sort, order))

    def iterate(self, *, per_page: int = 100, sort: Optional[str] = None,
                order: Optional[str] = None) -> Iterator[User]:
        """Every user, fetching pages as needed."""
        return self._iterate(lambda n: self.list(page=n, per_page=per_page, sort=sort, order=order))

    def get(self, user_id: int) -> User:
        return User(self._t.json("GET", f"/users/{segment(user_id)}"))

    def create(self, username: str, password: str, role: str = "operator", **fields: Any) -> User:
        """Create a user; ``role`` is admin | operator | viewer."""
        return User(self._t.json("POST", "/users", json=body(fields, username=username, password=password,
                                                               role=role)))

    def update(self, user_id: int, **fields: Any) -> User:
        """Change ``password``, ``role`` and/or ``is_active``."""
        return User(self._t.json("PATCH", f"/users/{segment(user_id)}", json=dict(fields)))

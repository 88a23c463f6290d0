"""``client.targets``: target CRUD, per-target performance and execution history."""
from __future__ import annotations

from typing import Any, Iterator, Optional, Union

from enabledrm_sdk._transport import segment
from enabledrm_sdk.models import Page, Target, TargetHistory, TargetHistoryItem, TargetPerformance
from enabledrm_sdk.resources._base import Resource, body, iterate_offset, page_params

TargetRef = Union[int, str]  # the numeric id or the serial (T20250001)


class TargetsResource(Resource):
    def list(self, *, page: Optional[int] = None, per_page: Optional[int] = None, sort: Optional[str] = None,
             order: Optional[str] = None, name: Optional[str] = None, tag: Optional[str] = None,
             enabled: Optional[bool] = None, queue: Optional[str] = None) -> Page[Target]:
        """One page of live targets, optionally filtered by name, tag, enabled or queue."""
        return self._page("/targets", Target, page_params(page, per_page, sort, order, name=name, tag=tag,
                                                          enabled=enabled, queue=queue))

    def iterate(self, *, per_page: int = 100, sort: Optional[str] = None, order: Optional[str] = None,
                name: Optional[str] = None, tag: Optional[str] = None, enabled: Optional[bool] = None,
                queue: Optional[str] = None) -> Iterator[Target]:
        """Every live target matching the filters, fetching pages as needed."""
        return self._iterate(lambda n: self.list(page=n, per_page=per_page, sort=sort, order=order, name=name,
                                                 tag=tag, enabled=enabled, queue=queue))

    def get(self, target_ref: TargetRef) -> Target:
        """A target by id or serial (archived ones too)."""
        return Target(self._t.json("GET", f"/targets/{segment(target_ref)}"))

    def create(self, name: str, **fields: Any) -> Target:
        """Register a target. Fields: ip_address or hostname, port, credential_id,
        connection ("ssh" | "local"; local is admin only), tags, queue, enabled, description,
        max_concurrent_runs (branches of any execution at once; 1: exclusive)."""
        return Target(self._t.json("POST", "/targets", json=body(fields, name=name)))

    def update(self, target_ref: TargetRef, **fields: Any) -> Target:
        """Change fields (a new address forgets the pinned host key)."""
        return Target(self._t.json("PATCH", f"/targets/{segment(target_ref)}", json=dict(fields)))

    def delete(self, target_ref: TargetRef) -> None:
        """Archive a target: it leaves lists and cannot run; its history stays."""
        self._t.json("DELETE", f"/targets/{segment(target_ref)}")

    def reset_host_key(self, target_ref: TargetRef) -> Target:
        """Forget the pinned SSH host key (admin only)."""
        return Target(self._t.json("POST", f"/targets/{segment(target_ref)}/reset-host-key"))

    def get_performance(self, target_serial: str, days: Optional[int] = None) -> TargetPerformance:
        """Branch success rate and durations over the last ``days`` days (server default 30),
        with the newest 10 branches."""
        return TargetPerformance(self._t.json("GET", f"/targets/{segment(target_serial)}/performance",
                                              params={"days": days}))

    def history(self, target_serial: str, limit: Optional[int] = None,
                offset: Optional[int] = None) -> TargetHistory:
        """Branches run on the target, newest first (``limit`` 1..100, default 20)."""
        return TargetHistory(self._t.json("GET", f"/targets/{segment(target_serial)}/executions",
                                          params={"limit": limit, "offset": offset}))

    def iter_history(self, target_serial: str, *, page_size: int = 100) -> Iterator[TargetHistoryItem]:
        """Every branch run on the target, newest first, fetching ``page_size`` at a time."""
        return iterate_offset(
            lambda limit, offset: self.history(target_serial, limit=limit, offset=offset).executions, page_size)

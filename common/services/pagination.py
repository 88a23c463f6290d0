"""Page/per_page/sort/order over any select, with the reference's pagination metadata."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class PageRequest:
    page: int = 1
    per_page: int = 20
    sort: str = "created_at"
    order: str = "desc"


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def meta(self) -> dict[str, Any]:
        pages = math.ceil(self.total / self.per_page) if self.total else 0
        return {"page": self.page, "per_page": self.per_page, "total": self.total, "pages": pages,
                "has_next": self.page < pages, "has_prev": self.page > 1}


def paginate(session: Session, stmt: Select, req: PageRequest, sort_columns: dict[str, Any], id_column) -> Page:
    """Two statements whatever the page size: a count and the page itself (id breaks sort ties)."""
    total = session.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    column = sort_columns[req.sort]
    ordering = [column.desc(), id_column.desc()] if req.order == "desc" else [column.asc(), id_column.asc()]
    rows = session.execute(stmt.order_by(*ordering).limit(req.per_page).offset((req.page - 1) * req.per_page))
    return Page(items=list(rows.scalars().unique()), page=req.page, per_page=req.per_page, total=total)


def escape_like(value: str) -> str:
    """LIKE wildcards in `value` taken literally (with ESCAPE '\\')."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(column, value: str):
    """Case-insensitive substring filter."""
    return column.ilike(f"%{escape_like(value)}%", escape="\\")

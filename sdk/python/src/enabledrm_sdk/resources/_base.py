"""Shared pieces of the resource groups."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Type, TypeVar

from enabledrm_sdk._transport import Transport
from enabledrm_sdk.models import ApiObject, Page

T = TypeVar("T", bound=ApiObject)


class Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _page(self, path: str, item_type: Type[T], params: Mapping[str, Any]) -> Page[T]:
        return Page(self._t.json("GET", path, params=params), item_type)

    def _iterate(self, fetch: Callable[[int], Page[T]]) -> Iterator[T]:
        """Every item of a paginated list, page after page, until has_next is false."""
        page_number = 1
        while True:
            page = fetch(page_number)
            yield from page
            if not page.pagination.has_next or len(page) == 0:
                return
            page_number += 1


def iterate_offset(fetch: Callable[[int, int], List[Any]], page_size: int) -> Iterator[Any]:
    """Every item of a limit/offset list: fetch(limit, offset) until a short (or empty) chunk."""
    offset = 0
    while True:
        chunk = fetch(page_size, offset)
        yield from chunk
        if len(chunk) < page_size:
            return
        offset += len(chunk)


def body(fields: Mapping[str, Any], **named: Any) -> Dict[str, Any]:
    """A request body from named arguments (unset ones, i.e. None, left out) plus extra fields as given."""
    out = {k: v for k, v in named.items() if v is not None}
    out.update(fields)
    return out


def page_params(page: Optional[int], per_page: Optional[int], sort: Optional[str], order: Optional[str],
                **filters: Any) -> Dict[str, Any]:
    return {"page": page, "per_page": per_page, "sort": sort, "order": order, **filters}


def idempotency_headers(key: Optional[str]) -> Dict[str, str]:
    """The Idempotency-Key header of execute and retry, when a key is given."""
    return {} if key is None else {"Idempotency-Key": key}

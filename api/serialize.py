"""Turning service results into response models."""
from __future__ import annotations

from pydantic import BaseModel

from common.services.pagination import Page


def page_of(page: Page, model: type[BaseModel]) -> dict:
    return {"data": [model.model_validate(item).model_dump(mode="json") for item in page.items],
            "pagination": page.meta}

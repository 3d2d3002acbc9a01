"""``/admin``: operator API, behind the admin key (``SEMCACHE_ADMIN_KEY``)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from gateway.cache.admin import CacheAdmin
from gateway.categories import CategoryConfigError
from gateway.deps import Services, get_services
from gateway.errors import InvalidRequest, NotFound, Unauthorized


def require_admin(request: Request) -> CacheAdmin:
    services: Services = get_services(request)
    key = services.settings.admin_key
    if key is None:
        raise Unauthorized("the admin API is disabled: set SEMCACHE_ADMIN_KEY")
    given = request.headers.get("x-semcache-admin-key") or ""
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:]
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise Unauthorized("missing or wrong admin key")
    if services.cache is None:
        raise NotFound("the cache is disabled on this gateway")
    return CacheAdmin(services.cache)


AdminDep = Annotated[CacheAdmin, Depends(require_admin)]
# row ids are 64-bit in both stores: anything else is a 400, not a database error
EntryId = Annotated[int, Field(ge=1, le=2**63 - 1)]
EntryIdPath = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
router = APIRouter(prefix="/admin", tags=["admin"])


class InvalidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[EntryId] | None = Field(None, max_length=10000)
    category: str | None = None
    namespace: str | None = None
    query: str | None = Field(None, min_length=1, max_length=10000)
    min_similarity: float = Field(0.9, ge=0.0, le=1.0)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry_id: EntryId
    reason: str | None = Field(None, max_length=2000)


@router.get("/stats")
async def stats(admin: AdminDep) -> dict[str, Any]:
    return await admin.stats()


@router.get("/entries")
async def list_entries(
    admin: AdminDep, category: str | None = None, namespace: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    rows = await admin.list(category=category, namespace=namespace, limit=limit, offset=offset)
    return {"object": "list", "data": rows}


@router.get("/entries/{entry_id}")
async def get_entry(entry_id: EntryIdPath, admin: AdminDep) -> dict[str, Any]:
    entry = await admin.get(entry_id)
    if entry is None:
        raise NotFound(f"no entry {entry_id}")
    return entry


@router.delete("/entries/{entry_id}")
async def delete_entry(entry_id: EntryIdPath, admin: AdminDep) -> dict[str, Any]:
    deleted = await admin.invalidate(ids=[entry_id])
    if not deleted:
        raise NotFound(f"no entry {entry_id}")
    return {"deleted": deleted}


@router.post("/invalidate")
async def invalidate(body: InvalidateBody, admin: AdminDep) -> dict[str, Any]:
    if not any(v is not None for v in (body.ids, body.category, body.namespace, body.query)):
        raise InvalidRequest("say what to invalidate: ids, category, namespace and/or query")
    if body.category is not None and body.category not in admin.service.categories:
        raise InvalidRequest(f"no category {body.category!r}", param="category")
    deleted = await admin.invalidate(
        ids=body.ids, category=body.category, namespace=body.namespace, query=body.query,
        min_similarity=body.min_similarity,
    )
    return {"deleted": deleted, "count": len(deleted)}


@router.post("/feedback")
async def feedback(body: FeedbackBody, admin: AdminDep) -> dict[str, Any]:
    if not await admin.feedback(body.entry_id, body.reason):
        raise NotFound(f"no entry {body.entry_id}")
    return {"recorded": True, "deleted": [body.entry_id]}


@router.post("/reload")
async def reload(admin: AdminDep) -> dict[str, Any]:
    try:
        names = await admin.reload()
    except CategoryConfigError as exc:
        raise InvalidRequest(f"categories not reloaded: {exc}") from exc
    return {"categories": names}

"""The IVR's flows over HTTP: which flows the node runs (version, files) and a reload after editing
sip_config/ivr/ (on one node: SIGHUP). A reload with problems changes nothing and answers 422 with
each problem: file, line, node and what is wrong; a good one is announced to every node (PostgreSQL
NOTIFY), each of which loads and checks the files itself. A node that runs no calls answers 503."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from callcenter.auth import requires
from callcenter.flow_library import FlowLibrary
from callcenter.http_guard import http_error, read_body
from callcenter.notices import IVR_FLOWS, notify
from callcenter.openapi import describe

LIBRARY: web.AppKey[FlowLibrary | None] = web.AppKey("ivr_library")
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("ivr_pool", asyncpg.Pool)


class NoBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _summary(library: FlowLibrary) -> dict[str, object]:
    current = library.current
    return {"version": current.version,
            "flows": [{"name": name, "file": current.files.get(name, ""), "nodes": len(flow.nodes),
                       "description": flow.description} for name, flow in sorted(current.flows.items())]}


def _library(request: web.Request) -> FlowLibrary:
    library = request.app[LIBRARY]
    if library is None:
        raise http_error(503, "this node runs no calls: ask a node that runs the platform (callcenter run)")
    return library


@describe("the IVR flows this node runs")
@requires("read")
async def list_flows(request: web.Request) -> web.Response:
    return web.json_response(_summary(_library(request)))


@describe("load the IVR flows again (a failed reload keeps the flows in use)", body=NoBody)
@requires("configure")
async def reload(request: web.Request) -> web.Response:
    await read_body(request, NoBody)
    library = _library(request)
    problems = await asyncio.to_thread(library.reload)
    if problems:
        raise http_error(422, "the flows were not reloaded; the previous ones stay in use", problems=problems[:50])
    async with request.app[POOL].acquire() as conn:
        await notify(conn, IVR_FLOWS)  # the other nodes (this one finds its files unchanged)
    return web.json_response(_summary(library))


def add_routes(app: web.Application, library: FlowLibrary | None, pool: asyncpg.Pool) -> None:
    app[LIBRARY] = library
    app[POOL] = pool
    app.router.add_get("/api/ivr/flows", list_flows)
    app.router.add_post("/api/ivr/reload", reload)

"""The OpenAPI 3.1 document of the HTTP API, generated from the routes themselves: each handler's
scope (callcenter/auth.py), and what ``describe`` says of it — a summary, the pydantic model of its
body and of its answer. Request bodies are the models ``read_body`` validates with, so the spec and
the validation cannot drift apart. Served at ``/api/openapi.json``.

Every error has one envelope (``Error``): ``error`` says what went wrong; ``field`` names the
field or path parameter at fault, ``problems`` each invalid field of a body, ``reason`` and
``state`` why a call-control command was refused and in which state of the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from callcenter.auth import PUBLIC, required_scope, requires

H = TypeVar("H", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
# Answers any route may give besides its own: refusals of the request, and the API's own limits.
ERRORS = {"400": "not JSON, or a path parameter that cannot be one", "404": "no such resource",
          "409": "conflicts with the current state", "413": "body too large", "415": "body is not JSON",
          "422": "invalid fields (``problems``) or values", "429": "too many requests",
          "503": "a store is unreachable, or the request took too long",
          "504": "a call's flow did not act on the command in time"}
AUTH_ERRORS = {"401": "no valid credentials", "403": "the credentials lack the route's scope"}
# Path parameters by name: what each route's {name} may be (agents' logins and queues' names are
# acd.models.NAME).
PATH = {
    "login": {"type": "string", "pattern": r"^[a-z][a-z0-9_.-]{0,63}$"},
    "name": {"type": "string", "pattern": r"^[a-z][a-z0-9_.-]{0,63}$"},
}
UUID = {"type": "string", "format": "uuid"}


class Error(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str
    field: str | None = None
    reason: str | None = None
    state: str | None = None
    problems: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class Doc:
    summary: str
    body: type[BaseModel] | None = None
    returns: type[BaseModel] | None = None
    status: int = 200
    query: dict[str, dict[str, Any]] | None = None  # query parameters' schemas, by name
    path: dict[str, dict[str, Any]] | None = None  # path parameters' schemas, by name (else PATH)
    listing: bool = False  # the answer is an array (of ``returns``, or of objects)


def describe(summary: str, *, body: type[BaseModel] | None = None, returns: type[BaseModel] | None = None,
             status: int = 200, query: dict[str, dict[str, Any]] | None = None,
             path: dict[str, dict[str, Any]] | None = None, listing: bool = False) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, "openapi", Doc(summary, body, returns, status, query, path, listing))  # noqa: B010
        return handler

    return mark


def doc_of(handler: object) -> Doc | None:
    return getattr(handler, "openapi", None)


def spec(app: web.Application, title: str = "Contact center API", version: str = "1") -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        info = route.resource.get_info()
        template = info.get("path") or info.get("formatter") or ""
        doc = doc_of(route.handler)
        if doc is None:
            continue  # not an API route (socket.io)
        paths.setdefault(template, {})[route.method.lower()] = _operation(template, route.method, route.handler, doc,
                                                                          schemas)
    schemas["Error"] = _schema(Error, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "description": "an API key: cc_<id>_<secret>"}}},
    }


def _operation(template: str, method: str, handler: object, doc: Doc, schemas: dict[str, Any]) -> dict[str, Any]:
    scope = required_scope(handler)
    op: dict[str, Any] = {"summary": doc.summary, "operationId": f"{method.lower()}_{_slug(template)}"}
    params = [{"name": n, "in": "path", "required": True, "schema": (doc.path or {}).get(n) or
               PATH.get(n, {"type": "string", "minLength": 1})} for n in re.findall(r"\{(\w+)\}", template)]
    params += [{"name": q, "in": "query", "required": False, "schema": schema}
               for q, schema in (doc.query or {}).items()]
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _schema(doc.body, schemas)}}}
    ok = _schema(doc.returns, schemas) if doc.returns is not None else {"type": "object"}
    if doc.listing:
        ok = {"type": "array", "items": ok}
    responses: dict[str, Any] = {str(doc.status): {"description": "done"} if doc.status == 204 else {
        "description": "done", "content": {"application/json": {"schema": ok}}}}
    errors = {**ERRORS, **(AUTH_ERRORS if scope != PUBLIC else {})}
    if scope == PUBLIC:  # the health probe answers 503 with its findings, not the envelope
        errors.pop("503")
        responses["503"] = {"description": "a component is down", "content": {"application/json": {"schema": ok}}}
    for status, why in errors.items():
        responses[status] = {"description": why,
                             "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    op["responses"] = responses
    if scope != PUBLIC:
        op["security"] = [{"apiKey": []}]
        op["x-scope"] = scope
    return op


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A reference to ``model`` in the components, its own definitions hoisted beside it."""
    if model.__name__ not in schemas:
        body = model.model_json_schema(ref_template=REF)
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
    return {"$ref": REF.format(model=model.__name__)}


def _slug(template: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", template.lower().replace("{", "by_").replace("}", "")).strip("_")


def add_route(app: web.Application, title: str = "Contact center API") -> None:
    document: dict[str, Any] = {}

    @describe("this document")
    @requires(PUBLIC)
    async def openapi_json(request: web.Request) -> web.Response:
        if not document:
            document.update(spec(request.app, title))
        return web.json_response(document)

    app.router.add_get("/api/openapi.json", openapi_json)

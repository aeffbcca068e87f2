"""The gate every HTTP request passes: one JSON error envelope, a time limit, authentication, the
route's scope, and the cross-origin and content-type rules for requests that change state.

Errors are always ``{"error": "<what is wrong>", ...}`` with a 4xx (the request's fault) or 503 (a
store did not answer in time; retry), never a plain-text page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import SystemRoute
from pydantic import BaseModel, ValidationError
from yarl import URL

from bus.redis import REDIS_DOWN
from callcenter.auth import PUBLIC, Authenticator, BadCredentials, Principal, required_scope

log = logging.getLogger("callcenter.http")

PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("principal", object)  # type: ignore[arg-type]
CHANGES_STATE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# A store is away or too slow: the client may retry.
UNAVAILABLE = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError, TimeoutError,
               *REDIS_DOWN)


def error(status: int, message: str, **extra: Any) -> web.Response:
    resp = web.json_response({"error": message, **extra}, status=status)
    if status == 503:
        resp.headers["Retry-After"] = "5"
    return resp


class _JsonError(web.HTTPException):
    def __init__(self, status: int, body: dict[str, Any]):
        self.status_code = status  # read by HTTPException.__init__
        super().__init__(text=json.dumps(body), content_type="application/json")


def http_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An exception carrying the JSON envelope, for code that raises instead of returning."""
    return _JsonError(status, {"error": message, **extra})


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        resp = error(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the resource has (RFC 9110)
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except asyncpg.DataError as exc:  # a value PostgreSQL cannot store (NUL byte, out of range …)
        return error(400, f"invalid value: {exc}")
    except UNAVAILABLE as exc:
        log.warning("%s %s: store unavailable: %s", request.method, request.path, exc or type(exc).__name__)
        return error(503, "a store (database or Redis) is unavailable; retry shortly")
    except Exception:  # noqa: BLE001 - a bug must still answer in the envelope, and be logged
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")


def long_lived(handler: H) -> H:
    """Mark a handler that holds its connection open (a WebSocket): no time limit applies to it."""
    setattr(handler, "long_lived", True)  # noqa: B010 - an attribute time_limit reads
    return handler


def time_limit(seconds: float) -> Any:
    """A request that is not answered in ``seconds`` (frozen database, Redis reconnecting) gets a 503."""

    late: set[asyncio.Task[web.StreamResponse]] = set()

    def _settled(task: asyncio.Task[web.StreamResponse]) -> None:
        late.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a request answered with 503 failed afterwards: %r", task.exception())

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if getattr(request.match_info.handler, "long_lived", False):
            return await handler(request)
        # The handler runs as its own task and the 503 does not wait for its cancellation: asyncpg
        # cancels a query by calling the server, and a frozen server held that for 10 s more.
        task = asyncio.ensure_future(handler(request))
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds)
        except asyncio.CancelledError:  # the client went away: so does the work for it
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        late.add(task)
        task.add_done_callback(_settled)
        log.warning("%s %s: no answer within %.1f s", request.method, request.path, seconds)
        return error(503, f"no answer from the database or Redis within {seconds:g} s; retry shortly")

    return limit


def _same_origin(origin: str, request: web.Request) -> bool:
    try:
        url = URL(origin)
    except ValueError:
        return False
    return url.host is not None and f"{url.host}:{url.port}" == f"{request.url.host}:{request.url.port}"


def access(authenticators: Sequence[Authenticator], allowed_origins: Sequence[str] = ()) -> Any:
    """Authenticate, check the route's scope, refuse foreign origins and non-JSON bodies. Nothing
    reaches a handler that changes state without passing all of it."""
    origins = frozenset(o.rstrip("/") for o in allowed_origins)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if isinstance(route, SystemRoute):  # no such route / method: the router's own 404/405
            return await handler(request)
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") not in origins and not _same_origin(origin, request):
            return error(403, f"cross-origin requests are refused (Origin: {origin[:100]})")
        principal: Principal | None = None
        try:
            for auth in authenticators:
                principal = await auth.authenticate(request)
                if principal is not None:
                    break
        except BadCredentials:
            return _unauthorized("invalid credentials")
        request[PRINCIPAL] = principal
        scope = required_scope(route.handler)
        if scope != PUBLIC:
            if principal is None:
                return _unauthorized("authentication required: Authorization: Bearer <API key>")
            if scope is None or not principal.allows(scope):
                return error(403, f"not allowed: this needs the {scope!r} scope", needs=scope)
        if request.method in WITH_BODY and request.content_type != "application/json":
            return error(415, "the body must be JSON (Content-Type: application/json)")
        return await handler(request)

    return guard


def _unauthorized(message: str) -> web.Response:
    resp = error(401, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="callcenter"'
    return resp


def check_routes(app: web.Application) -> None:
    """Every route declares its scope: a route that forgot is a bug found at start, not a hole."""
    missing = [f"{r.method} {r.resource.canonical if r.resource else '?'}" for r in app.router.routes()
               if r.method != "HEAD" and required_scope(r.handler) is None]
    if missing:
        raise RuntimeError(f"routes without a declared scope: {missing}")


M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[..., Any])


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as ``model``, or the JSON 400/422 naming each field at fault."""
    # JSON mode: strict types, but enum values may be given as their strings
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise http_error(400, "body is not valid JSON") from None
        raise http_error(422, "invalid request", problems=problems(exc)) from None


def problems(exc: ValidationError) -> list[dict[str, str]]:
    """Each field at fault in a body, and what is wrong with it (the error envelope's ``problems``)."""
    return [{"field": ".".join(str(p) for p in e["loc"]) or "(body)",
             "problem": "unknown field" if e["type"] == "extra_forbidden" else e["msg"]} for e in exc.errors()]

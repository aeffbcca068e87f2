"""REST API for ACD configuration (queues, agents, skills, memberships) and agent status.

Every request is validated in full before anything is written (pydantic models in acd/models.py);
a bad one gets a 4xx naming the problem and changes nothing. Writes that touch several rows run in
one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from acd.agent_state import InvalidTransition, Params, Status
from acd.agent_store import AgentStore, Conflict
from acd.directory import Directory
from acd.models import AgentIn, MembersIn, QueueIn, SipPasswordIn, SkillIn, SkillsIn, StatusIn, WrapUpIn
from bus import events as ev
from bus.notifier import Notifier
from callcenter.acd_sync import sync_agents, sync_queue
from callcenter.auth import requires
from callcenter.http_guard import http_error, read_body
from callcenter.notices import SIP_CREDENTIALS, notify
from callcenter.openapi import describe
from callcenter.sip_credentials import CredentialError, set_password


async def _check_references(conn: asyncpg.Connection, q: QueueIn, prompts: frozenset[str]) -> None:
    """What the settings name must exist: the overflow queue (not the queue itself), the skills of
    the routing steps, the hold prompt. Refused as a whole, naming each problem: 404 for names of
    nothing, 422 for a queue overflowing into itself."""
    s, problems = q.settings, []
    if s.overflow.kind == "queue":
        if s.overflow.target == q.name:
            raise http_error(422, "invalid request", problems=[{"field": "settings.overflow.target",
                                                               "problem": "a queue cannot overflow into itself"}])
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM queues WHERE name = $1)", s.overflow.target):
            problems.append({"field": "settings.overflow.target", "problem": f"no queue {s.overflow.target!r}"})
    named = sorted({skill for step in s.routing for skill in step.require})
    known = {r["name"] for r in await conn.fetch("SELECT name FROM skills WHERE name = ANY($1)", named)}
    for i, step in enumerate(s.routing):
        for skill in sorted(set(step.require) - known):
            problems.append({"field": f"settings.routing.{i}.require", "problem": f"no skill {skill!r}"})
    if s.hold_prompt not in prompts:
        problems.append({"field": "settings.hold_prompt", "problem": f"no prompt {s.hold_prompt!r}"})
    if problems:
        raise http_error(404, "the settings name what does not exist", problems=problems)


@dataclass(frozen=True)
class Phones:
    """What the phone-credential route needs: the digest realm, and whom to tell of a change."""

    realm: str
    changed: Callable[[], None]


POOL: web.AppKey[asyncpg.Pool] = web.AppKey("acd_pool", asyncpg.Pool)
PROMPTS: web.AppKey[frozenset[str]] = web.AppKey("acd_prompts", frozenset)
PHONES: web.AppKey[Phones] = web.AppKey("acd_phones", Phones)
AGENTS: web.AppKey[AgentStore] = web.AppKey("acd_agents", AgentStore)
DIRECTORY: web.AppKey[Directory] = web.AppKey("acd_directory", Directory)
NOTIFIER: web.AppKey[Notifier] = web.AppKey("acd_notifier", Notifier)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


async def _agent_id(conn: asyncpg.Connection, login: str) -> int:
    aid = await conn.fetchval("SELECT id FROM agents WHERE login = $1", login)
    if aid is None:
        raise http_error(404, f"no agent {login!r}")
    return int(aid)


async def _queue_id(conn: asyncpg.Connection, name: str) -> int:
    qid = await conn.fetchval("SELECT id FROM queues WHERE name = $1", name)
    if qid is None:
        raise http_error(404, f"no queue {name!r}")
    return int(qid)


# ------------------------------------------------------------------ queues
@describe("every queue with its settings", listing=True)
@requires("read")
async def list_queues(request: web.Request) -> web.Response:
    rows = await request.app[POOL].fetch("SELECT name, title, settings FROM queues ORDER BY name")
    return _json([{"name": r["name"], "title": r["title"], "settings": json.loads(r["settings"])} for r in rows])


@describe("create a queue", body=QueueIn, status=201)
@requires("configure")
async def create_queue(request: web.Request) -> web.Response:
    q = await read_body(request, QueueIn)
    async with request.app[POOL].acquire() as conn:
        await _check_references(conn, q, request.app[PROMPTS])
        try:
            await conn.execute("INSERT INTO queues (name, title, settings) VALUES ($1, $2, $3)",
                               q.name, q.title, q.settings.model_dump_json())
        except asyncpg.UniqueViolationError:
            raise http_error(409, f"queue {q.name!r} exists") from None
        await sync_queue(conn, request.app[DIRECTORY], q.name)
    return _json(q.model_dump(mode="json"), 201)


@describe("one queue, its settings and members")
@requires("read")
async def get_queue(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    row = await pool.fetchrow("SELECT id, name, title, settings FROM queues WHERE name = $1",
                              request.match_info["name"])
    if row is None:
        raise http_error(404, f"no queue {request.match_info['name']!r}")
    members = await pool.fetch("SELECT a.login, m.penalty FROM queue_members m JOIN agents a ON a.id = m.agent_id "
                               "WHERE m.queue_id = $1 ORDER BY m.penalty, m.position", row["id"])
    return _json({"name": row["name"], "title": row["title"], "settings": json.loads(row["settings"]),
                  "members": [{"agent": m["login"], "penalty": m["penalty"]} for m in members]})


@describe("change a queue's settings", body=QueueIn)
@requires("configure")
async def update_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    q = await read_body(request, QueueIn)
    if q.name != name:
        raise http_error(422, "the name in the body must match the URL (queues are renamed by re-creating)")
    async with request.app[POOL].acquire() as conn:
        await _check_references(conn, q, request.app[PROMPTS])
        done = await conn.execute("UPDATE queues SET title = $2, settings = $3 WHERE name = $1",
                                  name, q.title, q.settings.model_dump_json())
        if done.endswith(" 0"):
            raise http_error(404, f"no queue {name!r}")
        await sync_queue(conn, request.app[DIRECTORY], name)
    return _json(q.model_dump(mode="json"))


@describe("delete a queue", status=204)
@requires("configure")
async def delete_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with request.app[POOL].acquire() as conn:
        users = [r["name"] for r in await conn.fetch(
            "SELECT name FROM queues WHERE settings->'overflow'->>'kind' = 'queue' "
            "AND settings->'overflow'->>'target' = $1 AND name <> $1 ORDER BY name", name)]
        if users:
            raise http_error(409, f"queues overflow into {name!r}: {users}; change them first")
        members = [r["agent_id"] for r in await conn.fetch(
            "SELECT agent_id FROM queue_members m JOIN queues q ON q.id = m.queue_id WHERE q.name = $1", name)]
        done = await conn.execute("DELETE FROM queues WHERE name = $1", name)
        if done.endswith(" 0"):
            raise http_error(404, f"no queue {name!r}")
        await sync_queue(conn, request.app[DIRECTORY], name)
        await sync_agents(conn, request.app[DIRECTORY], members)
    return web.Response(status=204)


@describe("set a queue's members (agents, penalties)", body=MembersIn)
@requires("configure")
async def set_members(request: web.Request) -> web.Response:
    body = await read_body(request, MembersIn)
    logins = [m.agent for m in body.members]
    if len(set(logins)) != len(logins):
        raise http_error(422, "an agent is listed twice")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        qid = await _queue_id(conn, request.match_info["name"])
        ids = {r["login"]: r["id"] for r in await conn.fetch("SELECT id, login FROM agents WHERE login = ANY($1)",
                                                             logins)}
        unknown = sorted(set(logins) - set(ids))
        if unknown:
            raise http_error(404, f"no such agents: {unknown}", field="members")
        before = {r["agent_id"] for r in await conn.fetch("SELECT agent_id FROM queue_members WHERE queue_id = $1",
                                                          qid)}
        await conn.execute("DELETE FROM queue_members WHERE queue_id = $1", qid)
        await conn.executemany("INSERT INTO queue_members (queue_id, agent_id, penalty, position) "
                               "VALUES ($1, $2, $3, $4)",
                               [(qid, ids[m.agent], m.penalty, n) for n, m in enumerate(body.members)])
        after = set(ids.values())
        name = request.match_info["name"]
        changed: list[ev.AgentEvent] = [ev.AddMember(agent_id=a, queue=name) for a in sorted(after - before)]
        changed += [ev.RemoveMember(agent_id=a, queue=name) for a in sorted(before - after)]
    for e in changed:
        request.app[NOTIFIER].emit(e)
    async with request.app[POOL].acquire() as conn:
        await sync_agents(conn, request.app[DIRECTORY], sorted(before | after))
    return _json({"members": [m.model_dump() for m in body.members]})


# ------------------------------------------------------------------ agents and skills
@describe("every agent", listing=True)
@requires("read")
async def list_agents(request: web.Request) -> web.Response:
    rows = await request.app[POOL].fetch("SELECT login, name, extension, sip_uri FROM agents ORDER BY login")
    return _json([dict(r) for r in rows])


@describe("create an agent", body=AgentIn, status=201)
@requires("configure")
async def create_agent(request: web.Request) -> web.Response:
    a = await read_body(request, AgentIn)
    async with request.app[POOL].acquire() as conn:
        try:
            aid = await conn.fetchval("INSERT INTO agents (login, name, extension, sip_uri) VALUES ($1, $2, $3, $4) "
                                      "RETURNING id", a.login, a.name, a.extension, a.sip_uri)
        except asyncpg.UniqueViolationError as exc:
            raise http_error(409, f"agent login or extension already used ({exc.constraint_name})") from None
        await sync_agents(conn, request.app[DIRECTORY], [aid])
    return _json(a.model_dump(), 201)


@describe("one agent, their state, queues and skills")
@requires("read")
async def get_agent(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    row = await pool.fetchrow("SELECT id, login, name, extension, sip_uri FROM agents WHERE login = $1",
                              request.match_info["login"])
    if row is None:
        raise http_error(404, f"no agent {request.match_info['login']!r}")
    skills = await pool.fetch("SELECT s.name, x.proficiency FROM agent_skills x JOIN skills s ON s.id = x.skill_id "
                              "WHERE x.agent_id = $1 ORDER BY s.name", row["id"])
    queues = await pool.fetch("SELECT q.name, m.penalty FROM queue_members m JOIN queues q ON q.id = m.queue_id "
                              "WHERE m.agent_id = $1 ORDER BY q.name", row["id"])
    state = await request.app[AGENTS].get(row["id"])
    return _json({**{k: row[k] for k in ("login", "name", "extension", "sip_uri")},
                  "skills": {s["name"]: s["proficiency"] for s in skills},
                  "queues": [{"queue": q["name"], "penalty": q["penalty"]} for q in queues],
                  "state": {"status": state.status, "reason": state.reason, "activity": state.activity,
                            "call_id": state.call_id or None}})


@describe("delete an agent", status=204)
@requires("configure")
async def delete_agent(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        aid = await _agent_id(conn, request.match_info["login"])
        if (await request.app[AGENTS].get(aid)).status is not Status.LOGGED_OUT:
            raise http_error(409, "log the agent out first")
        await conn.execute("DELETE FROM agents WHERE id = $1", aid)
        await notify(conn, SIP_CREDENTIALS)
        await sync_agents(conn, request.app[DIRECTORY], [aid])
    request.app[PHONES].changed()
    return web.Response(status=204)


@describe("set (or make) the password of the agent's phone", body=SipPasswordIn)
@requires("configure")
async def set_sip_password(request: web.Request) -> web.Response:
    """A new password for the agent's phone (made here unless the body gives one); shown once."""
    body = await read_body(request, SipPasswordIn)
    phones = request.app[PHONES]
    async with request.app[POOL].acquire() as conn:
        await _agent_id(conn, request.match_info["login"])
        try:
            ext, password = await set_password(conn, request.match_info["login"], phones.realm, body.password)
        except CredentialError as exc:  # the agent has no extension (the body itself was checked)
            raise http_error(409, str(exc)) from None
    phones.changed()
    return _json({"login": request.match_info["login"], "extension": ext, "realm": phones.realm,
                  "password": password})


@describe("create a skill", body=SkillIn, status=201)
@requires("configure")
async def create_skill(request: web.Request) -> web.Response:
    body = await read_body(request, SkillIn)
    try:
        await request.app[POOL].execute("INSERT INTO skills (name) VALUES ($1)", body.name)
    except asyncpg.UniqueViolationError:
        raise http_error(409, f"skill {body.name!r} exists") from None
    return _json({"name": body.name}, 201)


@describe("set an agent's skills", body=SkillsIn)
@requires("configure")
async def set_skills(request: web.Request) -> web.Response:
    body = await read_body(request, SkillsIn)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        aid = await _agent_id(conn, request.match_info["login"])
        ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM skills WHERE name = ANY($1)",
                                                            list(body.skills))}
        unknown = sorted(set(body.skills) - set(ids))
        if unknown:
            raise http_error(404, f"no such skills: {unknown} (create them with POST /api/skills)")
        await conn.execute("DELETE FROM agent_skills WHERE agent_id = $1", aid)
        await conn.executemany("INSERT INTO agent_skills (agent_id, skill_id, proficiency) VALUES ($1, $2, $3)",
                               [(aid, ids[s], lvl) for s, lvl in body.skills.items()])
    async with request.app[POOL].acquire() as conn:
        await sync_agents(conn, request.app[DIRECTORY], [aid])
    return _json({"skills": body.skills})


@describe("log an agent in or out, or set them available or not ready", body=StatusIn)
@requires("control")
async def set_status(request: web.Request) -> web.Response:
    body = await read_body(request, StatusIn)
    pool, agents = request.app[POOL], request.app[AGENTS]
    async with pool.acquire() as conn:
        aid = await _agent_id(conn, request.match_info["login"])
        if body.status == "not_ready":
            ok = await conn.fetchval("SELECT NOT system FROM not_ready_reasons WHERE code = $1", body.reason)
            if not ok:
                codes = [r["code"] for r in await conn.fetch(
                    "SELECT code FROM not_ready_reasons WHERE NOT system ORDER BY code")]
                raise http_error(404, f"no not-ready reason {body.reason!r}: one of {codes}", field="reason")
        before = await agents.get(aid)
        logged_out = before.status is Status.LOGGED_OUT
        logged: ev.AgentEvent
        if body.status == "logged_out":
            event, logged = "logout", ev.AgentLogoff(agent_id=aid)
        elif logged_out:
            event, logged = "login", ev.AgentLogin(agent_id=aid)
        elif body.status == "not_ready":
            event, logged = body.status, ev.AgentPause(agent_id=aid, reason=body.reason)
        else:
            event, logged = body.status, ev.AgentUnpause(agent_id=aid)
        try:
            after = await agents.transition(aid, event, Params(reason=body.reason))
        except InvalidTransition as exc:
            raise http_error(409, exc.why) from None
        except Conflict as exc:
            raise http_error(409, str(exc)) from None
    request.app[NOTIFIER].emit(logged)
    return _json({"status": after.status, "reason": after.reason, "activity": after.activity})


@describe("end or extend an agent's wrap-up", body=WrapUpIn)
@requires("control")
async def wrap_up(request: web.Request) -> web.Response:
    """The agent ends wrap-up early, or extends it within the limit of the agent's queues."""
    body = await read_body(request, WrapUpIn)
    async with request.app[POOL].acquire() as conn:
        aid = await _agent_id(conn, request.match_info["login"])
    directory = request.app[DIRECTORY]
    limits = [s.wrap_up_extend_max for q in await directory.memberships(aid)
              if (s := await directory.settings(q)) is not None]
    event = "end_wrap_up" if body.action == "end" else "extend_wrap_up"
    params = Params(extend_by=body.seconds, wrap_extend_max=max(limits, default=0.0))
    try:
        after = await request.app[AGENTS].transition(aid, event, params)
    except InvalidTransition as exc:
        raise http_error(409, exc.why) from None
    except Conflict as exc:
        raise http_error(409, str(exc)) from None
    return _json({"activity": after.activity, "wrap_up_ends": after.deadline or None})


def add_routes(app: web.Application, pool: asyncpg.Pool, agents: AgentStore, directory: Directory,
               phones: Phones, prompts: frozenset[str], notifier: Notifier) -> None:
    app[POOL] = pool
    app[NOTIFIER] = notifier
    app[PROMPTS] = prompts
    app[PHONES] = phones
    app[AGENTS] = agents
    app[DIRECTORY] = directory
    r = app.router
    r.add_get("/api/queues", list_queues)
    r.add_post("/api/queues", create_queue)
    r.add_get("/api/queues/{name}", get_queue)
    r.add_put("/api/queues/{name}", update_queue)
    r.add_delete("/api/queues/{name}", delete_queue)
    r.add_put("/api/queues/{name}/members", set_members)
    r.add_get("/api/agents", list_agents)
    r.add_post("/api/agents", create_agent)
    r.add_get("/api/agents/{login}", get_agent)
    r.add_delete("/api/agents/{login}", delete_agent)
    r.add_put("/api/agents/{login}/skills", set_skills)
    r.add_post("/api/agents/{login}/status", set_status)
    r.add_post("/api/agents/{login}/wrapup", wrap_up)
    r.add_post("/api/agents/{login}/sip-password", set_sip_password)
    r.add_post("/api/skills", create_skill)


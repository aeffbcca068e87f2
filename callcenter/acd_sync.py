"""Keeps the routing directory in Redis (acd/directory.py) in step with the ACD configuration in
PostgreSQL: in full at start-up, and for the queues and agents a configuration change touched."""

from __future__ import annotations

import time

import asyncpg

from acd.directory import AgentEntry, Directory
from acd.models import QueueSettings


def device_of(extension: str | None, sip_uri: str | None) -> str:
    """A static SIP URI wins; otherwise the phone registered at the front door under the extension."""
    if sip_uri:
        return sip_uri
    return f"ext:{extension}" if extension else ""


async def sync_queue(conn: asyncpg.Connection, directory: Directory, name: str) -> None:
    row = await conn.fetchrow("SELECT settings FROM queues WHERE name = $1", name)
    if row is None:
        await directory.drop_queue(name)
        return
    await directory.put_queue(name, QueueSettings.model_validate_json(row["settings"]))


async def sync_agents(conn: asyncpg.Connection, directory: Directory, agent_ids: list[int]) -> None:
    rows = {r["id"]: r for r in await conn.fetch(
        "SELECT id, extension, sip_uri FROM agents WHERE id = ANY($1) AND active", agent_ids)}
    members: dict[int, dict[str, int]] = {a: {} for a in rows}
    # Member order: penalty, then the order the list was given in (linear and round-robin use it).
    for r in await conn.fetch(
            "SELECT m.agent_id, q.name, "
            "rank() OVER (PARTITION BY m.queue_id ORDER BY m.penalty, m.position, m.agent_id) - 1 AS o "
            "FROM queue_members m JOIN queues q ON q.id = m.queue_id WHERE m.queue_id IN "
            "(SELECT queue_id FROM queue_members WHERE agent_id = ANY($1))", agent_ids):
        if r["agent_id"] in members:
            members[r["agent_id"]][r["name"]] = int(r["o"])
    skills: dict[int, dict[str, int]] = {a: {} for a in rows}
    for r in await conn.fetch("SELECT x.agent_id, s.name, x.proficiency FROM agent_skills x "
                              "JOIN skills s ON s.id = x.skill_id WHERE x.agent_id = ANY($1)", agent_ids):
        skills[r["agent_id"]][r["name"]] = r["proficiency"]
    for aid in agent_ids:
        row = rows.get(aid)
        if row is None:
            await directory.drop_agent(aid)
        else:
            await directory.put_agent(AgentEntry(aid, members[aid], skills[aid],
                                                 device_of(row["extension"], row["sip_uri"])))


async def sync_all(conn: asyncpg.Connection, directory: Directory) -> tuple[int, int]:
    known = set(await directory.queues())
    names = [r["name"] for r in await conn.fetch("SELECT name FROM queues")]
    for name in names:
        await sync_queue(conn, directory, name)
    for gone in known - set(names):
        await directory.drop_queue(gone)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM agents")]
    await sync_agents(conn, directory, ids)
    await directory.mark_loaded(time.time())
    return len(names), len(ids)

"""What the SIP tests of the contact center share: queues and agents set up through the API, agents'
states, and the events of a caller's interaction read from PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from tests.conftest import Platform


def queue(p: Platform, name: str, **settings: Any) -> None:
    body = {"name": name, "settings": {"ring_timeout": 4, "wrap_up": 1, "announce_every": 0, **settings}}
    st, out = p.send("POST", "/api/queues", body)
    assert st == 201, out


def status(p: Platform, login: str, state: str, reason: str = "") -> None:
    body = {"status": state, **({"reason": reason} if reason else {})}
    st, out = p.send("POST", f"/api/agents/{login}/status", body)
    assert st == 200, out


def agent(p: Platform, login: str) -> dict[str, Any]:
    return p.get(f"/api/agents/{login}")[1]["state"]  # type: ignore[index,no-any-return]


async def events_of(pool: asyncpg.Pool, caller: str, p: Platform, timeout: float = 15,
                    until: str = "HANGUP", since: float = 0.0) -> list[dict[str, Any]]:
    """The events of the newest closed interaction from ``caller`` (arrived after ``since``), once
    ``until`` is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        iid = await pool.fetchval("SELECT id FROM interactions WHERE caller_number = $1 AND ended_at IS NOT NULL "
                                  "AND arrived_at > to_timestamp($2) ORDER BY arrived_at DESC LIMIT 1", caller, since)
        if iid is not None:
            rows = await pool.fetch("SELECT e.event, e.agent_id, a.login, e.data FROM interaction_events e "
                                    "LEFT JOIN agents a ON a.id = e.agent_id WHERE interaction_id = $1 ORDER BY e.id",
                                    iid)
            if any(r["event"] == until for r in rows):
                return [{"event": r["event"], "agent": r["login"], **json.loads(r["data"])} for r in rows]
        time.sleep(0.2)
    raise AssertionError(f"no closed interaction for {caller}; log:\n{p.log.read_text()[-3000:]}")


def names(events: list[dict[str, Any]]) -> list[str]:
    skip = {"DID", "ANSWER", "PROMPT", "DIAL", "DIAL_RINGING", "DIAL_ANSWER", "DIAL_HANGUP", "BRIDGE", "UNBRIDGE",
            "DTMF", "MEDIA_ERROR", "IDENTIFY"}
    return [e["event"] for e in events if e["event"] not in skip]

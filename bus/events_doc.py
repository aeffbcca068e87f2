"""Writes docs/events.md from the catalogue in bus/events.py: ``python -m bus.events_doc > docs/events.md``.
A test compares the file with this output, so the document cannot drift from the code."""

from __future__ import annotations

import inspect
import json
import re
import sys
from dataclasses import MISSING, fields
from typing import Any

from bus import consumer, stream
from bus import events as ev

# Example values by field name (an example of every event is built from them).
SAMPLES: dict[str, Any] = {
    "at": 1764590400.125, "node": "cc1-4711", "id": "9c1f4e2ab7d04c55a0e3f6b81d2c7e90",
    "transition": "reserve", "state": "queued", "status": "available", "activity": "reserved", "version": 42,
    "holds": 1, "held_total": 12.5, "held_longest": 12.5, "data": {"order": "A-17"}, "args": {"leg": "agent"},
    "interaction": "0b9f6a52-3c1e-4f7e-9d3a-2c8e5f1a7b40",
    "call": "", "queue": "support", "agent_id": 7, "caller_number": "+15551230001",
    "caller_name": "Ada Lovelace", "caller_uri": "sip:+15551230001@trunk.example",
    "dialed_number": "500", "dialed_uri": "sip:500@pbx.example", "sip_call_id": "a84b4c76e66710@trunk",
    "worker": "w3", "media_call": "w3-17", "route": "support", "customer_id": 1042, "digit": "1",
    "method": "rfc2833", "digits": "1234", "reason": "eof", "prompt": "welcome.wav", "uri": "sip:201@10.0.0.5:5062",
    "cause": "normal_clearing", "code": 200, "side": "remote", "other": "o-5c2f0a9d1e3b4a67", "final": True,
    "command": "play", "error": "no such call", "position": 2, "priority": 3, "skills": {"english": 3},
    "wait": 12.4, "key": "9", "to": "callback", "max_callers": 50, "kind": "queue", "target": "billing",
    "ewt_minutes": 3, "agents": [7], "ring": 4.2, "agent_call": "o-5c2f0a9d1e3b4a67", "callback": False,
    "attempt": 1, "talk": 184.0, "path": "var/voicemail/w3-17.wav", "seconds": 21.5, "retry_in": 300.0,
    "how": "caller_id", "by": "system", "party": "", "muted": False, "conference_seconds": 0.0,
    "transfers": [{"mode": "blind", "kind": "queue", "target": "billing", "from_agent": 7, "to_agent": None,
                   "at": 1764590400.125}],
    "to_agent_id": 9, "leg": "o-77aa0b1c2d3e4f50", "result": "cancelled", "left": "target", "conference": 0.0,
    "party_call": "o-77aa0b1c2d3e4f50", "action": "start", "recording": "",
    "flow": "main", "ivr_node": "menu", "node_type": "menu", "value": "2", "confidence": 0.97, "ms": 12.5,
    "attempts": 1, "account": "10000001", "locked_until": None, "number": "T100001", "survey": "after_call",
    "question": "csat", "answer": 4, "query": "balance", "started": 1764590398.5, "latency_ms": 412.0,
}
# Most derived first: a queue event is a call event too.
SECTIONS = ((ev.QueueEvent, "Queue events"), (ev.CallEvent, "Call events"), (ev.AgentEvent, "Agent events"))
ORDER = ("Call events", "Queue events", "Agent events")


def _comments(cls: type[ev.Event]) -> dict[str, str]:
    """Trailing comments on the field lines of the class and its bases: what the values mean."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for line in inspect.getsource(klass).splitlines():
            m = re.match(r"\s+(\w+): [^#]*#\s*(.+)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def _type(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("|", "\\|")  # a table cell


def _section(cls: type[ev.Event]) -> str:
    return next(title for base, title in SECTIONS if issubclass(cls, base))


def example(cls: type[ev.Event]) -> ev.Event:
    return cls(**{f.name: SAMPLES[f.name] for f in fields(cls)})


def render() -> str:
    out = [
        "# Events",
        "",
        "Every call, queue and agent event, as defined in `bus/events.py` (this file is generated from it:",
        "`.venv/bin/python -m bus.events_doc > docs/events.md`). Names follow Asterisk's queue_log where one",
        "fits. On the wire an event is one JSON object: `v` (the schema version, now "
        f"{ev.SCHEMA}), `name`, then its",
        "fields. A reader refuses unknown fields of its own schema version and drops those of a newer one.",
        "",
        "Every event has `at` (Unix seconds), `node` (the control-plane node that emitted it) and `id`",
        "(unique; a subscriber recognises a repeated delivery by it). Call and queue events have",
        "`interaction` (the contact record's id) and `call` (the media call id of an originated leg, empty",
        "for the caller's leg); queue events `queue` and `agent_id` (when an agent is concerned); agent",
        "events `agent_id`. Events with the same interaction (or the same agent) are delivered in the order",
        "they were emitted.",
        "",
        "## The stream",
        "",
        "Every event goes through the node's notifier (`bus/notifier.py`) to the Redis stream `cc:events`",
        "(`bus/stream.py`; every key is in `bus/keys.py`). An entry's field `e` is the JSON above, or a",
        f"JSON array of up to {stream.BATCH} of them in order (what a node emitted since its last send).",
        f"The stream is trimmed to about {stream.MAXLEN:,} entries and to {stream.RETENTION / 3600:g} hours.",
        f"While Redis is away, a node keeps its events in memory, then past {stream.MEMORY_BOUND:,} in",
        "`var/spool/events-*.jsonl`, and sends them in order once Redis answers (at its next start, if it",
        "stopped meanwhile). Delivery is at least once.",
        "",
        "Subscribers (`bus/consumer.py`) each have a consumer group: `interactions` (the interaction log,",
        "which derives the record from the events alone, so `callcenter records rebuild` can write it",
        "again from the stream). Every node runs each subscriber and one at a time reads for a group",
        "(a lease in Redis), so a subscriber sees the stream in order; another node takes over within",
        f"{consumer.LEASE_TTL:g} seconds of the reader's death and gets the entries it had not acknowledged.",
        "An entry is acknowledged once handled; a subscriber that is slow or down never slows a call.",
        "",
        "Each node keeps the sessions of its calls (`bus/call_session.py`: a table of named transitions",
        "driven by the call's events) and mirrors them in Redis (`cc:call:<interaction>`, and `cc:calls`",
        "for the live ones) in the stream writer's pipeline; `GET /api/calls` reads them from any node.",
        "Every change of a session is a `CALLSTATE` event right after the event that caused it.",
    ]
    section = ""
    for cls in sorted(ev.catalogue(), key=lambda c: ORDER.index(_section(c))):
        if _section(cls) != section:
            section = _section(cls)
            out += ["", f"## {section}"]
        notes = _comments(cls)
        out += ["", f"### `{cls.NAME}` ({cls.__name__})", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        base = next(b for b in (ev.QueueEvent, ev.CallEvent, ev.AgentEvent) if issubclass(cls, b))
        own = [f for f in fields(cls) if f.name not in {g.name for g in fields(base)}]
        if own:
            out += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
            for f in own:
                if f.default is not MISSING:
                    default = json.dumps(f.default)
                elif f.default_factory is not MISSING:
                    default = json.dumps(f.default_factory())
                else:
                    default = "required"
                out.append(f"| `{f.name}` | `{_type(f.type)}` | {default} | {notes.get(f.name, '')} |")
            out.append("")
        out += ["```json", example(cls).encode(), "```"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

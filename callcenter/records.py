"""How each call and queue event changes the contact record (the ``interactions`` row) and what it
adds to the record's event log (``interaction_events``). The interaction log applies this to
every event it receives, so the record is derived from the events alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bus import events as ev

# The record's disconnect_side, from the side a media worker reports.
SIDES = {"remote": "caller", "platform": "platform", "worker": "system", "lost": "system"}
# Fields kept in the log's own columns rather than in the event's data (the queue is in both, as it
# always was: the name survives a queue's deletion).
_COLUMNS = {"at", "node", "id", "interaction", "agent_id"}


def ts(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def opened(e: ev.CallArrived) -> dict[str, Any]:
    """The columns of a record opened by an arrival."""
    return {
        "direction": "inbound", "caller_number": e.caller_number, "caller_name": e.caller_name or None,
        "caller_uri": e.caller_uri, "dialed_number": e.dialed_number, "dialed_uri": e.dialed_uri,
        "sip_call_id": e.sip_call_id, "worker_id": e.worker, "media_call_id": e.media_call, "route": e.route,
        "arrived_at": ts(e.at), "node": e.node or None,
    }


def changes(e: ev.CallEvent) -> dict[str, Any]:
    """The columns an event (other than an arrival) sets on its record; {} for most events. A queue
    is named here (``queue_id``); the interaction log writes its id."""
    if e.call:  # an originated leg's events are in the log only
        return {}
    if isinstance(e, ev.CallAnswered):
        return {"answered_at": ts(e.at)}
    if isinstance(e, ev.CustomerIdentified):
        return {"customer_id": e.customer_id}
    if isinstance(e, ev.DigitsCollected):
        return {"digits": e.digits}
    if isinstance(e, ev.Hangup):
        return {"ended_at": ts(e.at), "disconnect_reason": e.cause, "disconnect_side": SIDES.get(e.side, "system"),
                "sip_code": e.code or None}
    if isinstance(e, ev.EnterQueue):
        return {"queued_at": ts(e.at), "queue_id": e.queue}
    if isinstance(e, ev.Offer):
        return {"agent_offered_at": ts(e.at)}
    if isinstance(e, ev.Connect):
        return {"agent_id": e.agent_id, "agent_answered_at": ts(e.at)}
    if isinstance(e, ev.AttendedTransfer) and e.to_agent_id is not None:  # the record names the last agent
        return {"agent_id": e.to_agent_id}
    if isinstance(e, ev.IvrExit):
        return {"ivr_flow": e.flow, "ivr_exit": e.reason, "ivr_exit_node": e.ivr_node}
    if isinstance(e, ev.CallStateChanged):  # the session's running totals: the latest is the truth
        out: dict[str, Any] = {"call_data": json.dumps(e.data)} if e.data else {}
        if e.holds:
            out.update(hold_count=e.holds, hold_seconds=e.held_total, hold_longest=e.held_longest)
        if e.transfers:
            out.update(transfer_count=len(e.transfers), transfers=json.dumps(e.transfers))
        if e.conference_seconds:
            out["conference_seconds"] = e.conference_seconds
        return out
    return {}


def data(e: ev.Event) -> dict[str, Any]:
    """What the event adds to the log beyond its columns (at, name, queue, agent)."""
    out = {name: getattr(e, name) for name in e.field_names() if name not in _COLUMNS}
    if not out.get("call"):
        out.pop("call", None)
    return out

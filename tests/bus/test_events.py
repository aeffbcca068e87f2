"""The event catalogue: every event round-trips, the wire format is strict for this schema and
tolerant of a newer one, and docs/events.md is what the catalogue says."""

from __future__ import annotations

import json

import pytest

from bus import events as ev
from bus.events_doc import example, render
from tests.conftest import ROOT


@pytest.mark.parametrize("cls", ev.catalogue(), ids=lambda c: c.NAME)
def test_every_event_round_trips(cls: type[ev.Event]) -> None:
    e = example(cls)
    assert ev.decode(e.encode()) == e
    assert json.loads(e.encode())["v"] == ev.SCHEMA
    assert json.loads(e.encode()) == json.loads(json.dumps(e.body()))  # what socket.io sends is the same JSON


def test_names_are_unique_and_in_queue_log_style() -> None:
    names = [c.NAME for c in ev.catalogue()]
    assert len(names) == len(set(names))
    assert all(n.replace("_", "").isalnum() and n.isupper() for n in names)
    with pytest.raises(TypeError, match="duplicate"):
        ev.event(type("Again", (ev.CallAnswered,), {"NAME": "ANSWER"}))


def test_ordering_key_is_the_interaction_or_the_agent() -> None:
    assert ev.Dtmf(interaction="i-1", digit="1").key == "i-1"
    assert ev.EnterQueue(interaction="i-1", queue="q", position=1).key == "i-1"
    assert ev.AgentLogin(agent_id=7).key == "agent:7"


def test_unknown_fields_are_refused_for_this_schema_and_dropped_for_a_newer_one() -> None:
    answered = ev.CallAnswered(interaction="i-1", at=1.0)
    body = json.loads(answered.encode())
    body["colour"] = "blue"
    with pytest.raises(ev.EventError, match="unknown fields"):
        ev.decode(json.dumps(body))
    body["v"] = ev.SCHEMA + 1
    assert ev.decode(json.dumps(body)) == answered


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"v": 1}', b'{"v": 1, "name": "TELEPORT"}',
                                 b'{"v": 1, "name": "DTMF", "interaction": "i"}', b'{"name": "ANSWER"}'])
def test_what_is_not_an_event_raises_event_error(raw: bytes) -> None:
    with pytest.raises(ev.EventError):
        ev.decode(raw)


def test_docs_events_md_is_generated_from_the_catalogue() -> None:
    assert (ROOT / "docs" / "events.md").read_text() == render(), \
        "run: .venv/bin/python -m bus.events_doc > docs/events.md"

"""The notifier: stamps the node, reaches every sink in order, survives a broken sink."""

from __future__ import annotations

import pytest

from bus import events as ev
from bus.notifier import Notifier


def test_every_sink_gets_every_event_in_order_with_the_node(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier("cc1")
    got: list[ev.Event] = []

    def broken(_e: ev.Event) -> None:
        raise RuntimeError("subscriber bug")

    n.sinks += [broken, got.append]
    n.emit(ev.CallAnswered(interaction="i-1", at=1.0))
    n.emit(ev.Hangup(interaction="i-1", at=2.0, cause="normal_clearing", node="cc2"))
    assert [(e.NAME, e.node) for e in got] == [("ANSWER", "cc1"), ("HANGUP", "cc2")]  # a set node is kept
    assert "subscriber bug" in caplog.text

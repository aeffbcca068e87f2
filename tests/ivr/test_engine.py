"""The flow engine (ivr/engine.py) on every node type, with the fake media worker and fakes of the
CRM and the queues: what the caller hears, in order, where the flow goes, and the IVR events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bus import events as ev
from ivr.engine import luhn
from ivr.services import CustomerRef
from tests.ivr.fakes import Harness

ANN = CustomerRef(id=11, display_name="Ann Lee", first_name="Ann", value_tier="gold")
BOB = CustomerRef(id=12, display_name="Bob Roe", first_name="Bob", value_tier="standard")


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "ivr")


MENU = """
flow: main
start: menu
nodes:
  menu:
    type: menu
    prompt: main_menu
    timeout: 0.05
    retries: 1
    var: picked
    choices:
      - {key: 1, goto: one}
      - {key: 2, goto: two}
    fallback: bye
  one: {type: play, prompt: thanks}
  two: {type: play, prompt: welcome}
  bye: {type: hangup, prompt: goodbye, reason: served}
"""


async def test_a_menu_key_cuts_the_prompt_and_chooses(h: Harness) -> None:
    h.write("main", MENU)
    h.media.answers = [("main_menu", "2")]
    exit_ = await h.call("main")
    assert h.media.heard == ["main_menu", "welcome"]
    assert exit_.reason == "served" and exit_.node == "two"
    assert [e.ivr_node for e in h.of(ev.IvrNode)] == ["menu", "two"]
    assert [(e.kind, e.value) for e in h.of(ev.IvrInput)] == [("key", "2")]
    assert h.run.ctx.get("picked") == "2"
    assert h.of(ev.IvrExit)[0].reason == "served"


async def test_a_menu_retries_on_no_input_and_a_wrong_key_then_falls_back(h: Harness) -> None:
    h.write("main", MENU)
    h.media.answers = [("main_menu", "9")]  # first try: a key outside the menu; second: nothing
    exit_ = await h.call("main")
    assert h.media.heard == ["main_menu", "invalid_entry", "main_menu", "goodbye"]
    assert [(e.attempt, e.value) for e in h.of(ev.IvrNoMatch)] == [(1, "9")]
    assert [e.attempt for e in h.of(ev.IvrNoInput)] == [2]
    assert exit_.node == "bye"


async def test_keys_typed_ahead_answer_the_next_question(h: Harness) -> None:
    h.write("main", MENU)
    h.media.answers = [("main_menu", "1")]
    h.media.prompt_time = 0.05
    await h.call("main")
    assert h.media.heard == ["main_menu", "thanks"]


async def test_collect_with_luhn_validation(h: Harness) -> None:
    h.write("main", """
flow: main
start: card
nodes:
  card:
    type: collect
    prompt: enter_account
    var: card
    min_length: 4
    max_length: 16
    validate: luhn
    timeout: 0.05
    inter_timeout: 0.05
    next: done
    fallback: bye
  done: {type: play, prompt: thanks}
  bye: {type: hangup}
""")
    h.media.answers = [("enter_account", "4111111111111112#"), ("enter_account", "4111111111111111#")]
    exit_ = await h.call("main")
    assert h.media.heard == ["enter_account", "invalid_entry", "enter_account", "thanks"]
    assert h.run.ctx.get("card") == "4111111111111111"
    assert exit_.node == "done"


def test_luhn() -> None:
    assert luhn("79927398713") and luhn("4111111111111111")
    assert not luhn("79927398710") and not luhn("0")


async def test_a_pin_never_appears_in_the_events(h: Harness) -> None:
    h.write("main", """
flow: main
start: pin
nodes:
  pin: {type: collect, prompt: enter_pin, var: pin, min_length: 4, max_length: 4, validate: pin, next: ok}
  ok: {type: play, prompt: thanks}
""")
    h.media.answers = [("enter_pin", "4321")]
    await h.call("main")
    assert h.run.ctx.get("pin") == "4321"
    assert "4321" not in h.told()
    assert h.of(ev.IvrInput)[0].value == "****"


async def test_set_and_say(h: Harness) -> None:
    h.write("main", """
flow: main
start: set
nodes:
  set:
    type: set
    values: {balance.amount: "1021.05", balance.currency: EUR, who: "{call.caller_number}"}
    attach: true
    next: s
  s:
    type: say
    parts:
      - prompt: your_balance
      - money: "{balance.amount}"
        currency: "{balance.currency}"
      - number: 7
""")
    await h.call("main", caller="+15550001111")
    assert h.media.heard == ["joined/your_balance+say_1+say_thousand+say_20+say_1+say_euros+say_and+say_5+say_cents"
                             "+say_7"]
    attached = [e.args["data"] for e in h.of(ev.CommandApplied)]
    assert attached == [{"balance.amount": "1021.05", "balance.currency": "EUR", "who": "+15550001111"}]


async def test_conditions_on_variables_hours_and_queue_state(h: Harness, tmp_path: Path) -> None:
    cal = tmp_path / "calendars.yaml"
    cal.write_text("""
calendars:
  support:
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-18:00"}
    holidays: [2026-12-25]
""")
    h.write("main", """
flow: main
start: c
nodes:
  c:
    type: condition
    branches:
      - when: {holiday: support}
        goto: closed
      - when: {all: [{open: support}, {agents_available: support}, {wait_under: {queue: support, seconds: 60}}]}
        goto: open
      - when: {any: [{var: call.caller_number, in: ["+15550001111"]}, {var: x, gt: 3}]}
        goto: known
    else: closed
  open: {type: play, prompt: welcome}
  known: {type: play, prompt: thanks}
  closed: {type: play, prompt: closed}
""")
    wed_10 = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)  # 10:00 in Berlin, a Wednesday
    h.queues.available["support"] = 1
    h.queues.waits["support"] = 30
    assert (await h.call("main", calendars=cal, clock=lambda: wed_10)).node == "open"
    h.queues.waits["support"] = 90  # waiting too long: not open, but a known caller
    assert (await h.call("main", calendars=cal, clock=lambda: wed_10)).node == "known"
    christmas = dt.datetime(2026, 12, 25, 9, 0, tzinfo=dt.UTC)
    assert (await h.call("main", calendars=cal, clock=lambda: christmas)).node == "closed"
    evening = dt.datetime(2026, 12, 2, 18, 0, tzinfo=dt.UTC)  # 19:00 in Berlin
    assert (await h.call("main", caller="+4930", calendars=cal, clock=lambda: evening)).node == "closed"


LOOKUP = """
flow: main
start: who
nodes:
  who:
    type: identify
    timeout: 0.1
    account_length: 8
    next: bal
    failed: agent
  bal:
    type: lookup
    query: balance
    found: say
    empty: none
    failed: sorry
  say:
    type: say
    parts: [{prompt: your_balance}, {money: "{balance.balance}"}]
    next: ticket
  ticket:
    type: create_ticket
    subject: "Fault reported by {customer.name}"
    next: read
    failed: sorry
  read:
    type: say
    parts: [{prompt: ticket_read}, {digits: "{ticket.number}"}]
  none: {type: play, prompt: lookup_failed, next: agent}
  sorry: {type: play, prompt: lookup_failed, next: agent}
  agent: {type: queue, queue: support, intent: billing, skills: {english: 2}}
"""


async def test_identified_by_number_then_lookup_and_ticket(h: Harness) -> None:
    h.write("main", LOOKUP.replace('{digits: "{ticket.number}"}', '{prompt: thanks}'))
    h.crm.by_phone["+15550001111"] = [ANN]
    h.crm.data[("balance", 11)] = {"balance": "5.25"}
    exit_ = await h.call("main")
    assert h.media.heard == ["joined/your_balance+say_5+say_dollars+say_and+say_20+say_5+say_cents",
                             "joined/ticket_read+thanks"]
    assert [(e.customer_id, e.how) for e in h.of(ev.CustomerIdentified)] == [(11, "caller_id")]
    assert h.crm.tickets == [(11, "incident", "Fault reported by Ann Lee")]
    assert [e.number for e in h.of(ev.TicketCreated)] == ["T1001"]
    assert [(e.query, e.result) for e in h.of(ev.IvrLookup)] == [("balance", "found")]
    assert exit_.reason == "served"


async def test_shared_number_asks_account_and_pin_three_wrong_pins_end_the_attempt(h: Harness) -> None:
    h.write("main", LOOKUP)
    h.crm.by_phone["+15550001111"] = [ANN, BOB]
    h.crm.accounts["12345678"] = ("1234", ANN)
    h.media.answers = [("enter_account", "12345678"), ("enter_pin", "0000"), ("enter_account", "12345678"),
                       ("enter_pin", "1111"), ("enter_account", "12345678"), ("enter_pin", "2222")]
    exit_ = await h.call("main")
    assert h.media.heard == ["enter_account", "enter_pin", "wrong_pin"] * 2 + ["enter_account", "enter_pin"]
    assert [(e.reason, e.attempts) for e in h.of(ev.IdentifyFailed)] == [("wrong_pin", 1), ("wrong_pin", 2),
                                                                         ("wrong_pin", 3)]
    assert not h.of(ev.CustomerIdentified)
    assert exit_.reason == "agent" and h.queues.entered[0]["priority"] == 0  # no tier: no priority
    assert not any(x in h.told() for x in ("0000", "1111", "2222"))


async def test_right_pin_identifies_and_tier_sets_queue_priority(h: Harness) -> None:
    h.write("main", LOOKUP)  # no balance on file: an agent
    h.crm.accounts["12345678"] = ("1234", ANN)
    h.media.answers = [("enter_account", "12345678"), ("enter_pin", "1234")]
    exit_ = await h.call("main", caller="+15559999999")
    assert [(e.customer_id, e.how) for e in h.of(ev.CustomerIdentified)] == [(11, "account_pin")]
    assert exit_.reason == "agent"
    assert h.queues.entered == [{"queue": "support", "priority": 3, "skills": {"english": 2}, "intent": "billing"}]
    data = [e.args["data"] for e in h.of(ev.CommandApplied)]
    assert {"customer_id": "11", "identified_by": "account_pin", "tier": "gold"} in data
    assert {"queue": "support", "intent": "billing"} in data


async def test_repeated_failures_lock_the_account(h: Harness) -> None:
    h.write("main", LOOKUP)
    h.crm.accounts["12345678"] = ("1234", ANN)
    h.crm.lock_after = 2
    h.media.answers = [("enter_account", "12345678"), ("enter_pin", "0000"), ("enter_account", "12345678"),
                       ("enter_pin", "1111")]
    await h.call("main", caller="+15559999999")
    assert h.media.heard[-1] == "account_locked"
    assert h.of(ev.IdentifyFailed)[-1].locked_until is not None


@pytest.mark.parametrize("trouble", ["down", "slow", "nothing"])
async def test_a_failed_lookup_tells_the_caller_and_offers_an_agent(h: Harness, trouble: str) -> None:
    h.write("main", LOOKUP)
    if trouble == "down":
        h.crm.down = True
    elif trouble == "slow":
        h.crm.slow = 1.5
    exit_ = await h.call("main", customer=ANN)  # identified already (by the caller's number)
    assert h.media.heard == ["lookup_failed"]
    assert exit_.reason == "agent"
    result = h.of(ev.IvrLookup)[0]
    assert result.result == {"down": "failed", "slow": "timeout", "nothing": "empty"}[trouble]
    assert result.ms < 1100  # the lookup's time limit: at most a second of silence


async def test_caller_hanging_up_is_abandoned_in_the_ivr(h: Harness) -> None:
    h.write("main", MENU)
    h.media.hang_up_at = "main_menu"
    exit_ = await h.call("main")
    assert (exit_.reason, exit_.node) == ("abandoned", "menu")
    assert h.of(ev.IvrExit)[0].reason == "abandoned"


async def test_subflow_returns_and_goto_moves_on(h: Harness) -> None:
    h.write("main", """
flow: main
start: sub
nodes:
  sub: {type: subflow, flow: common, next: after}
  after: {type: goto, flow: other, node: b}
""")
    h.write("common", """
flow: common
start: a
nodes:
  a: {type: play, prompt: welcome, next: r}
  r: {type: return}
""")
    h.write("other", """
flow: other
start: a
nodes:
  a: {type: play, prompt: closed}
  b: {type: play, prompt: thanks}
""")
    exit_ = await h.call("main")
    assert h.media.heard == ["welcome", "thanks"]
    assert (exit_.flow, exit_.node, exit_.reason) == ("other", "b", "served")


async def test_a_loop_through_a_menu_is_ended_after_max_steps(h: Harness) -> None:
    h.write("main", """
flow: main
start: m
max_steps: 10
nodes:
  m:
    type: menu
    prompt: main_menu
    choices: [{key: 1, goto: p}]
  p: {type: play, prompt: thanks, next: m}
""")
    h.media.answers = [("main_menu", "1")] * 20
    exit_ = await h.call("main")
    assert exit_.reason == "loop" and h.media.heard[-1] == "goodbye"


async def test_callback_voicemail_and_transfer(h: Harness) -> None:
    h.write("main", """
flow: main
start: m
nodes:
  m:
    type: menu
    prompt: main_menu
    choices: [{key: 1, goto: cb}, {key: 2, goto: vm}, {key: 3, goto: out}]
  cb: {type: callback, queue: support}
  vm: {type: voicemail, queue: support}
  out: {type: transfer, number: "15551234", failed: vm}
""")
    h.media.answers = [("main_menu", "1")]
    assert (await h.call("main")).reason == "callback" and h.queues.callbacks == ["support"]
    h.media.answers = [("main_menu", "2")]
    assert (await h.call("main")).reason == "voicemail" and h.queues.voicemails == ["support"]
    h.media.answers = [("main_menu", "3")]  # not dialable: the failed exit
    assert (await h.call("main")).reason == "voicemail"
    h.dialable["15551234"] = "sip:15551234@carrier"
    h.media.answers = [("main_menu", "3")]
    call = h.call("main")
    import asyncio

    task = asyncio.create_task(call)
    for _ in range(100):
        if h.media.bridges:
            break
        await asyncio.sleep(0.01)
    assert h.media.dialed == ["sip:15551234@carrier"]
    h.media.remote_hangup(h.media.calls["w1-1"])
    assert (await task).reason == "transfer"


async def test_a_hash_after_a_complete_answer_is_not_the_next_answer(h: Harness) -> None:
    h.write("main", LOOKUP)
    h.crm.accounts["12345678"] = ("1234", ANN)
    h.media.answers = [("enter_account", "12345678#1234")]  # all typed ahead, with a needless #
    exit_ = await h.call("main", caller="+15559999999")
    assert [(e.customer_id, e.how) for e in h.of(ev.CustomerIdentified)] == [(11, "account_pin")]
    assert h.media.heard[:2] == ["enter_account", "enter_pin"]
    assert exit_.reason == "agent"


SPEECH = """
flow: main
start: ask
nodes:
  ask:
    type: menu
    prompt: main_menu
    timeout: 0.05
    retries: 1
    choices:
      - {key: 1, phrases: [네], goto: yes}
      - {key: 2, phrases: [아니요], goto: no}
    fallback: bye
  yes: {type: play, prompt: thanks}
  no: {type: play, prompt: welcome}
  bye: {type: hangup}
"""


async def test_a_spoken_answer_barges_in_and_chooses(h: Harness) -> None:
    h.write("main", SPEECH)
    h.media.says = [("main_menu", [["아니요", 0.99]])]
    exit_ = await h.call("main")
    assert exit_.node == "no" and h.media.heard == ["main_menu", "welcome"]
    assert [(e.kind, e.value, e.confidence) for e in h.of(ev.IvrInput)] == [("speech", "아니요", 0.99)]


async def test_off_menu_or_unsure_speech_is_no_match(h: Harness) -> None:
    h.write("main", SPEECH)
    h.media.says = [("main_menu", [["네", 0.99], ["사람", 0.99]]), ("main_menu", [["네", 0.40]])]
    exit_ = await h.call("main")
    assert [(e.kind, e.value) for e in h.of(ev.IvrNoMatch)] == [("speech", "네 사람"), ("speech", "네")]
    assert exit_.node == "bye"


async def test_keys_still_answer_a_speech_menu_and_stop_the_listening(h: Harness) -> None:
    h.write("main", SPEECH)
    h.media.answers = [("main_menu", "1")]
    exit_ = await h.call("main")
    assert exit_.node == "yes" and [(e.kind, e.value) for e in h.of(ev.IvrInput)] == [("key", "1")]
    assert not h.media._listening  # StopListen was sent


async def test_without_a_speech_service_a_speech_menu_takes_keys(h: Harness) -> None:
    h.write("main", SPEECH)
    h.media.speech_up = False
    h.media.answers = [("main_menu", "2")]
    assert (await h.call("main")).node == "no"

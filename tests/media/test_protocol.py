from __future__ import annotations

import pytest

from media import protocol as mp
from media.sipuri import request_uri, split_name_addr, user_part


def test_round_trip_of_every_message_kind() -> None:
    msgs: list[mp.Message] = [
        mp.Play("w1-1", path="/p.wav", loop=True, interrupt_digits="#"),
        mp.CollectDigits("w1-1", max_digits=4, first_timeout=2.5),
        mp.Originate("o-1", uri="sip:a@b", timeout=9.0),
        mp.Mute("o-1", muted=False), mp.SendDtmf("o-1", digits="12#"),
        mp.Muted(worker_id="w1", call_id="o-1", at=1.0, muted=True),
        mp.DtmfSent(worker_id="w1", call_id="o-1", at=1.0, digits="12#"),
        mp.HungUp(worker_id="w1", call_id="w1-1", at=1.5, cause="normal_clearing", code=200, side="remote",
                  extra={"reason": "Normal"}),
        mp.CallArrived(worker_id="w1", call_id="w1-2", at=2.0, caller_number="+1555", dialed_number="100"),
    ]
    for m in msgs:
        assert mp.decode(m.encode()) == m


@pytest.mark.parametrize("raw", [b"not json", b'{"type": "teleport", "call_id": "x"}', b'{"call_id": "x"}',
                                 b'{"type": "play", "call_id": "x", "volume": 11}', b'{"type": "play"}', b"[]"])
def test_bad_messages_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.decode(raw)


def test_commands_sent_together_are_one_entry_in_order() -> None:
    answer, play = mp.Answer("w1-1"), mp.Play("w1-1", path="/p.wav", loop=True)
    assert mp.decode_commands(mp.encode_commands([answer, play])) == [answer, play]
    assert mp.encode_commands([play]) == play.encode()  # one command stays a plain object
    assert mp.decode_commands(play.encode().encode()) == [play]


@pytest.mark.parametrize("raw", [b"[not json", b"[1]", b'[{"type": "answer", "call_id": "x"}, {"type": "teleport"}]',
                                 b'[["type"]]', b'[{"type": "play", "call_id": "x", "volume": 11}]'])
def test_bad_command_entries_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.decode_commands(raw)


def test_sip_header_helpers() -> None:
    assert split_name_addr('"Alice Smith" <sip:+1555@host:5060>;tag=9') == ("Alice Smith", "sip:+1555@host:5060")
    assert split_name_addr("<sip:bob@h>") == ("", "sip:bob@h")
    assert split_name_addr("sip:carol@h;tag=1") == ("", "sip:carol@h")
    assert user_part("sip:+15551234@host:5060;user=phone") == "+15551234"
    assert user_part("sip:host.example") == ""
    assert request_uri("INVITE sip:100@10.0.0.1:5070 SIP/2.0\r\nVia: x\r\n") == "sip:100@10.0.0.1:5070"

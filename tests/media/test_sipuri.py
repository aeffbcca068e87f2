"""SIP header helpers (media/sipuri.py): names and numbers out of header values, and caller-
controlled text made safe at the boundary."""

from __future__ import annotations

from media.sipuri import clean_text, request_uri, split_name_addr, user_part


def test_name_addr_and_user_part() -> None:
    assert split_name_addr('"Alice \\"A\\"" <sip:+1555@h>;tag=x') == ('Alice \\"A\\"', "sip:+1555@h")
    assert split_name_addr("Bob <sip:201@h:5060>") == ("Bob", "sip:201@h:5060")
    assert split_name_addr("sip:300@h;user=phone") == ("", "sip:300@h")
    assert user_part("sip:+15551234@host:5060;user=phone") == "+15551234"
    assert user_part("sip:host") == ""
    assert request_uri("INVITE sip:500@10.0.0.1 SIP/2.0\r\nVia: x\r\n") == "sip:500@10.0.0.1"
    assert request_uri("garbage") == ""


def test_clean_text_keeps_ordinary_text_and_cuts_to_the_limit() -> None:
    assert clean_text("  Alice Martin ", 64) == "Alice Martin"
    assert clean_text("Zoë Ünal", 64) == "Zoë Ünal"
    assert clean_text("x" * 300, 128) == "x" * 128


def test_clean_text_removes_what_a_hostile_caller_puts_in() -> None:
    invalid_utf8 = b"Eve\xff\xfe\xfd".decode("utf-8", "surrogateescape")  # as pjsua2 hands it over
    assert clean_text(invalid_utf8, 64) == "Eve\ufffd\ufffd\ufffd"
    assert clean_text("a\x00b\x1b[31mc\u200bd\u2028e", 64) == "ab[31mcde"
    assert clean_text("tab\there\u00a0nbsp", 64) == "tabhere nbsp"
    assert clean_text("\x00" * 10_000 + "late", 16) == ""  # bounded work: past 8x the limit is not read

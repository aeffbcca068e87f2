"""Small helpers to read numbers and names out of SIP header values (no pjsua2 here)."""

from __future__ import annotations

import re
import unicodedata

_NAME_ADDR = re.compile(r'^\s*(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<t>[^<"]*?))\s*<(?P<uri>[^>]*)>')


def split_name_addr(value: str) -> tuple[str, str]:
    """``"Alice" <sip:+1555@h>;tag=x`` -> ("Alice", "sip:+1555@h"). A bare URI has no name."""
    m = _NAME_ADDR.match(value)
    if m:
        name = m.group("q") if m.group("q") is not None else (m.group("t") or "")
        return name.strip(), m.group("uri").strip()
    return "", value.split(";", 1)[0].strip()


def user_part(uri: str) -> str:
    """``sip:+15551234@host:5060;user=phone`` -> ``+15551234``; '' when the URI has no user."""
    _, uri = split_name_addr(uri)
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0]


def request_uri(raw_message: str) -> str:
    """The Request-URI of a raw SIP request (its first line)."""
    first = raw_message.split("\r\n", 1)[0].split("\n", 1)[0]
    parts = first.split(" ")
    return parts[1] if len(parts) >= 3 else ""


def clean_text(value: str, limit: int) -> str:
    """Text from a SIP header made safe to store and show: bytes that are not UTF-8 (they reach
    Python as lone surrogates) become U+FFFD, control and format characters go, and at most
    ``limit`` characters are kept. A caller controls these bytes."""
    if value.isascii() and value.isprintable():  # the usual header: nothing to remove (per call, in C)
        return value[:limit].strip()
    text = value[: limit * 8].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    kept = (" " if unicodedata.category(ch) == "Zs" else ch for ch in text
            if unicodedata.category(ch) == "Zs" or unicodedata.category(ch)[0] not in "CZ")
    return "".join(kept)[:limit].strip()

"""Bad input at the SIP edge: garbage datagrams and malformed SIP to the front door and to a worker
leave every process running and the next good call answered."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Platform, Stores, require, start_platform
from tests.sip.load import load

MALFORMED = [
    os.urandom(1200),
    b"\x00" * 64,
    b"INVITE\r\n\r\n",
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: garbage\r\n\r\n",
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:100@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: notanumber INVITE\r\nContent-Length: 99999\r\n\r\nv=0",
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=2\r\n"
    b"To: <sip:100@127.0.0.1>\r\nCall-ID: bad-2\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 20\r\n\r\nv=0\r\nm=audio x RTP/AVP",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnope\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n\r\n",
    b"BYE sip:nobody@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK3\r\nFrom: <sip:a@b>;tag=3\r\n"
    b"To: <sip:c@d>;tag=4\r\nCall-ID: none\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n" + b"X-Long: " + b"a" * 60000 + b"\r\n\r\n",
]


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require("kamailio")
    p = start_platform(stores, tmp_path_factory.mktemp("badinput"), front_door="kamailio", workers=2)
    p.wait(lambda: p.health()["workers"]["up"] == 2, what="workers up")
    yield p
    assert p.stop() == 0


def _spray(port: int, rounds: int = 20) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(rounds):
            for msg in MALFORMED:
                try:
                    s.sendto(msg, ("127.0.0.1", port))
                except OSError:
                    pass  # a datagram over the loopback MTU limit is refused locally; that is fine
            s.sendto(os.urandom(300), ("127.0.0.1", port))


@pytest.mark.parametrize("target", ["front door", "worker"])
def test_garbage_and_malformed_sip_leave_everything_running(platform: Platform, tmp_path: Path,
                                                            target: str) -> None:
    port = platform.sip_port if target == "front door" else platform.workers()[0]["sip_port"]
    pids = {w["worker_id"]: w["pid"] for w in platform.workers()}
    _spray(port)
    time.sleep(1.0)
    health = platform.health()
    assert health["ok"], health
    assert {w["worker_id"]: w["pid"] for w in health["workers"]["items"]} == pids, "a worker died"
    assert all(w["restarts"] == 0 for w in health["workers"]["items"])
    assert health["kamailio"]["ok"]
    good = load(f"127.0.0.1:{platform.sip_port}", tmp_path, calls=3, hold_ms=1000, rate=10)
    assert good.answered == 3, good.proc.stdout[-2000:]

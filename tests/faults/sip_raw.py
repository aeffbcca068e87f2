"""A raw SIP client over UDP, for hostile traffic: REGISTERs with or without digest credentials
(RFC 2617 MD5), from any loopback address (127.0.0.5 … play other hosts), and INVITE floods that
never send their ACK. It speaks SIP on the wire, as an attacker's script would."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
from dataclasses import dataclass


@dataclass
class Response:
    code: int
    headers: dict[str, str]
    raw: str


def parse(data: bytes) -> Response:
    text = data.decode(errors="replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    code = int(head[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(code, headers, text)


class Client:
    def __init__(self, target: tuple[str, int], source_ip: str = "127.0.0.5", timeout: float = 2.0):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source_ip, 0))
        self.sock.settimeout(timeout)
        self.ip, self.port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: str) -> None:
        self.sock.sendto(msg.encode(), self.target)

    def recv(self) -> Response | None:
        """The next final response (provisional ones skipped); None on timeout (no answer at all)."""
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            r = parse(data)
            if r.code >= 200:
                return r

    def register(self, ext: str, password: str | None = None, contact: str | None = None,
                 expires: int = 300) -> list[Response | None]:
        """REGISTER ``ext``; answer a challenge when a password is given. Returns every final response."""
        host = f"{self.target[0]}:{self.target[1]}"
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        contact = contact or f"<sip:{ext}@{self.ip}:{self.port}>"

        def request(cseq: int, auth: str = "") -> str:
            return (f"REGISTER sip:{host} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
                    f"From: <sip:{ext}@{host}>;tag={tag}\r\nTo: <sip:{ext}@{host}>\r\n"
                    f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
                    f"Expires: {expires}\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n")

        self.send(request(1))
        first = self.recv()
        out: list[Response | None] = [first]
        if first is None or first.code != 401 or password is None:
            return out
        self.send(request(2, digest_header(first.headers["www-authenticate"], ext, password, "REGISTER",
                                           f"sip:{host}")))
        out.append(self.recv())
        return out

    def invite(self, service: str, n: int) -> None:
        """An INVITE that will never be ACKed (a flood's packet)."""
        host = f"{self.target[0]}:{self.target[1]}"
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {self.ip}\r\ns=-\r\nc=IN IP4 {self.ip}\r\nt=0 0\r\n"
               f"m=audio {40000 + n % 1000 * 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        self.send(f"INVITE sip:{service}@{host} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
                  f"From: <sip:flood{n}@{self.ip}>;tag={secrets.token_hex(4)}\r\nTo: <sip:{service}@{host}>\r\n"
                  f"Call-ID: flood-{n}-{secrets.token_hex(6)}\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:flood@{self.ip}:{self.port}>\r\nMax-Forwards: 70\r\n"
                  f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")


def digest_header(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = fields["realm"], fields["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    if "qop" in fields:
        cnonce, nc = secrets.token_hex(4), "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        extra = ""
    return (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5{extra}\r\n')

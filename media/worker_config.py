"""A media worker's settings, from its command line (the supervisor writes it)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    host: str
    sip_port: int
    rtp_port: int
    rtp_port_count: int
    redis_url: str
    outbound_reserve: int = 1
    answer_timeout: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 3.0
    max_calls_override: int = 0
    # Behind a front door: only INVITEs from it are taken, and originated legs go through it.
    front_door: str = ""  # host:port
    ack_timeout: float = 4.0  # an answered call whose ACK never comes is hung up after this
    speech: str = ""  # host:port of the speech service ("" : none, a Listen is answered unavailable)


def parse_args(argv: list[str] | None = None) -> tuple[WorkerConfig, str]:
    """The configuration and the log level."""
    ap = argparse.ArgumentParser(prog="media.worker")
    ap.add_argument("--id", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--rtp-port-count", type=int, default=40)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--outbound-reserve", type=int, default=1)
    ap.add_argument("--answer-timeout", type=float, default=5.0)
    ap.add_argument("--heartbeat-interval", type=float, default=1.0)
    ap.add_argument("--heartbeat-ttl", type=float, default=3.0)
    ap.add_argument("--front-door", default="", help="host:port: take calls only from it, originate through it")
    ap.add_argument("--ack-timeout", type=float, default=4.0)
    ap.add_argument("--speech", default="", help="host:port of the speech service")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    cfg = WorkerConfig(
        worker_id=a.id,
        host=a.host,
        sip_port=a.sip_port,
        rtp_port=a.rtp_port,
        rtp_port_count=a.rtp_port_count,
        redis_url=a.redis_url,
        outbound_reserve=a.outbound_reserve,
        answer_timeout=a.answer_timeout,
        heartbeat_interval=a.heartbeat_interval,
        heartbeat_ttl=a.heartbeat_ttl,
        front_door=a.front_door,
        ack_timeout=a.ack_timeout,
        speech=a.speech,
    )
    return cfg, a.log_level

"""What the fault suite measures: real SIP callers who stay on the line until the platform sends
them a BYE, when that BYE came, and what the record says afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from callcenter.embedded import free_port
from tests.conftest import Platform, Stores, require, sipp_start, start_platform
from tests.sip.phones import phone


@dataclass
class Caller:
    """One SIPp caller (tests/sip/scenarios/wait_bye_call.xml): exits 0 once it got the BYE."""

    proc: subprocess.Popen[str]
    number: str
    ended_at: float = 0.0
    interaction: asyncpg.Record | None = field(default=None, repr=False)

    def poll(self) -> bool:
        if self.ended_at == 0.0 and self.proc.poll() is not None:
            self.ended_at = time.time()
        return self.ended_at != 0.0

    @property
    def got_bye(self) -> bool:
        return self.proc.poll() == 0


def waiting_callers(platform: Platform, n: int, service: str = "300", timeout: float = 90) -> list[Caller]:
    callers = []
    workdir = platform.var_dir.parent / "callers"  # SIPp writes its statistics where it runs
    workdir.mkdir(exist_ok=True)
    for _ in range(n):
        proc = sipp_start("wait_bye_call.xml", f"127.0.0.1:{platform.sip_port}", service=service, timeout=timeout,
                          extra=["-recv_timeout", f"{int(timeout * 1000)}"], cwd=workdir)
        callers.append(Caller(proc, f"+1666{proc.pid}1"))
    return callers


async def answered(pool: asyncpg.Pool, callers: list[Caller], timeout: float = 20) -> None:
    """Wait until every caller's call is answered; attach its interaction record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {r["caller_number"]: r for r in await pool.fetch(
            "SELECT * FROM interactions WHERE caller_number = ANY($1::text[])", [c.number for c in callers])}
        if all(c.number in rows and rows[c.number]["answered_at"] is not None for c in callers):
            for c in callers:
                c.interaction = rows[c.number]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every caller was answered: {[c.number for c in callers]}")


async def byes(callers: list[Caller], within: float) -> list[Caller]:
    """Wait up to ``within`` seconds; returns the callers whose call ended (each with its time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not all(c.poll() for c in callers):
        await asyncio.sleep(0.05)
    return [c for c in callers if c.poll()]


def hang_up(callers: list[Caller]) -> None:
    for c in callers:
        if c.proc.poll() is None:
            c.proc.kill()
        c.proc.wait()


async def record(pool: asyncpg.Pool, interaction_id: object, closed: bool = True,
                 timeout: float = 15) -> asyncpg.Record:
    """The interaction as written (the log writes in batches: wait for it to be closed)."""
    deadline = time.monotonic() + timeout
    while True:
        row = await pool.fetchrow("SELECT * FROM interactions WHERE id = $1", interaction_id)
        if not closed or (row is not None and row["ended_at"] is not None) or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.1)


FIGURES = Path(__file__).resolve().parents[2] / "var" / "test" / "reliability.jsonl"


def figure(fault: str, **measured: object) -> None:
    """What a fault test measured, for docs/reliability.md: printed (pytest -s) and appended to
    var/test/reliability.jsonl, one JSON line per fault and run."""
    line = json.dumps({"fault": fault, **measured, "at": time.strftime("%Y-%m-%d %H:%M:%S")}, default=str)
    print("RELIABILITY", line)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as f:
        f.write(line + "\n")


def two_worker_platform(stores: Stores, tmp: Path, plan: str, redis_db: int | None) -> Platform:
    """The platform behind the real Kamailio with two media workers and its own dial plan."""
    require("kamailio")
    require("sipp")
    path = tmp / "dialplan.toml"
    path.write_text(plan)
    p = start_platform(stores, tmp, front_door="kamailio", workers=2, redis_db=redis_db, dialplan=path)
    p.wait(lambda: p.health()["workers"]["up"] == 2, what="both workers up")
    return p


def redis_pid(p: Platform) -> int:
    return int((p.var_dir / "redis" / "redis.pid").read_text())


def redis_port(p: Platform) -> int:
    title = Path(f"/proc/{redis_pid(p)}/cmdline").read_bytes().split(b"\0")[0]  # "redis-server host:port"
    return int(title.rsplit(b":", 1)[1].split()[0])


def wait_healthy(p: Platform, since: float, timeout: float = 20) -> float:
    """Seconds from ``since`` until /healthz is all ok again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if p.get("/healthz")[0] == 200:
                return time.time() - since
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not healthy {timeout:.0f} s after the fault: {p.health()}")


def agent_with_phone(p: Platform, seconds: int) -> object:
    for method, path, body in (("POST", "/api/queues", {"name": "redisq", "settings": {"wrap_up": 1}}),
                               ("POST", "/api/agents", {"login": "rita", "name": "Rita", "extension": "471"}),
                               ("PUT", "/api/queues/redisq/members", {"members": [{"agent": "rita"}]})):
        assert p.send(method, path, body)[0] in (200, 201, 409)
    st, creds = p.send("POST", "/api/agents/rita/sip-password", {})
    assert st == 200
    agent = phone("--port", str(free_port()), "--agent", "--register", f"sip:471@127.0.0.1:{p.sip_port}",
                  f"--password={creds['password']}", "--tone", "1000", "--seconds", str(seconds))  # type: ignore[index]
    assert p.send("POST", "/api/agents/rita/status", {"status": "available"})[0] == 200
    return agent

"""Shared fixtures: real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set) and
a real platform process (``callcenter run``) started per test module with its own config."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from callcenter.auth import SCOPES, create_key
from callcenter.db import migrate
from callcenter.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, with_database
from callcenter.flow_library import FlowLibrary
from callcenter.prompts import load_prompts

ROOT = Path(__file__).resolve().parent.parent
SIPP_SHARE = Path("/usr/share/sip-tester")


@dataclass(frozen=True)
class Stores:
    database_url: str
    redis_url: str
    api_key: str  # all scopes, made by the same code as `callcenter api-key create`

    def redis_db(self, n: int) -> str:
        """The same Redis server, database ``n``: each test module keeps its keys apart."""
        return self.redis_url.rsplit("/", 1)[0] + f"/{n}"


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    base = ROOT / "var" / "test"
    base.mkdir(parents=True, exist_ok=True)
    pg = rd = None
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        pg = EmbeddedPostgres(base / "pgdata")
        admin = pg.start()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        rd = EmbeddedRedis(base / "redis")
        redis_url = rd.start()
    name = f"cc_test_{os.getpid()}"

    async def create() -> str:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        conn = await asyncpg.connect(with_database(admin, name))
        await migrate(conn)
        token = await create_key(conn, "tests", SCOPES)
        await conn.close()
        return token

    token = asyncio.run(create())
    try:
        yield Stores(with_database(admin, name), redis_url, token)
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()

        asyncio.run(drop())
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()


@asynccontextmanager
async def fresh_redis(stores: Stores, db: int) -> AsyncIterator[aioredis.Redis]:
    """An emptied Redis database for one test module's keys."""
    r = aioredis.from_url(stores.redis_db(db))
    await r.flushdb()
    try:
        yield r
    finally:
        await r.aclose()


@pytest_asyncio.fixture(scope="session")
async def pool(stores: Stores) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


def shipped_flows(tmp: Path) -> FlowLibrary:
    """The IVR flows of sip_config/ (an API's flow routes serve them)."""
    prompts = load_prompts(ROOT / "sip_config" / "prompts.toml", tmp)
    return FlowLibrary(ROOT / "sip_config" / "ivr", ROOT / "sip_config" / "calendars.yaml", set(prompts.texts),
                       lambda: set())


def korean(word: str, before: float, after: float, voice: str = "ko+f2") -> bytes:
    """``word`` as a caller says it on the phone, as 16-bit 8 kHz PCM: an espeak-ng Korean voice,
    telephone band, u-law and back (the setup of speech-vosk.md that recognized 600/600), between
    ``before`` and ``after`` seconds of silence."""
    speech = subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-p", "50", "--stdout", word],
                            check=True, capture_output=True).stdout
    ulaw = subprocess.run(["sox", "-D", "-R", "-t", "wav", "-", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8",
                           "-t", "raw", "-", "pad", str(before), str(after), "sinc", "300-3400"], input=speech,
                          check=True, capture_output=True).stdout
    return subprocess.run(["sox", "-D", "-R", "-t", "raw", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", "-",
                           "-t", "raw", "-e", "signed-integer", "-b", "16", "-"], input=ulaw, check=True,
                          capture_output=True).stdout


def require(tool: str) -> None:
    if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
        pytest.fail(f"{tool} is not installed: `make test` installs it (Debian package) when run as root")


@dataclass
class Platform:
    proc: subprocess.Popen[bytes]
    http: str
    sip_port: int
    worker_sip_port: int
    var_dir: Path
    config: Path
    log: Path
    api_key: str
    redis_url: str  # "": the platform runs its own embedded Redis
    database_url: str  # "": the platform runs its own embedded PostgreSQL
    demo_customers: int = 0  # > 0: started with demo data, as `make run` does

    def get(self, path: str, timeout: float = 5) -> tuple[int, object]:
        req = urllib.request.Request(self.http + path, headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def send(self, method: str, path: str, body: object) -> tuple[int, object]:
        req = urllib.request.Request(self.http + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def health(self) -> dict:  # type: ignore[type-arg]
        return self.get("/healthz")[1]  # type: ignore[return-value]

    def workers(self) -> list[dict]:  # type: ignore[type-arg]
        return self.health()["workers"]["items"]  # type: ignore[no-any-return]

    def wait(self, pred, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("platform did not stop within 30 s of SIGINT") from None
        return self.proc.returncode


def write_config(path: Path, *, var_dir: Path, http_port: int, sip_port: int, worker_port: int, rtp_port: int,
                 front_door: str, workers: int, dialplan: Path, extra: str = "", paths: str = "",
                 speech: str = "off") -> None:
    path.write_text(f"""
[http]
host = "127.0.0.1"
port = {http_port}
[sip]
host = "127.0.0.1"
port = {sip_port}
front_door = "{front_door}"
trusted_sources = ["127.0.0.1"]  # the tests' callers play the carrier's trunk; attackers use 127.0.0.5+
[media]
workers = {workers}
worker_sip_port = {worker_port}
rtp_port = {rtp_port}
{extra}
[speech]
enabled = "{speech}"
[paths]
var_dir = "{var_dir}"
dialplan = "{dialplan}"
prompts = "{ROOT / 'sip_config' / 'prompts.toml'}"
{paths}
""")


_PLATFORM_STARTS = itertools.count()
# SIPp callers started together must not draw the same RTP ports (a random draw collided: errno 98).
_SIPP_MEDIA = itertools.count(os.getpid() % 200)


def worker_ports() -> tuple[int, int]:
    """SIP and RTP bases for a platform's workers. Two platforms may be up at once (module
    fixtures): each start takes the next block of 8 SIP ports. The SIP ports (21000-28999) are
    clear of the test phones' fixed ports (17000-20999 with their RTP): a worker once held the port
    an agent phone of tests/sip/test_queue.py was to take. The RTP ports (30000-39999, 100 a
    platform) are clear of SIPp's media ports (40000-59999, sipp_start)."""
    return (21000 + (os.getpid() % 200) * 40 + (next(_PLATFORM_STARTS) % 5) * 8,
            30000 + (uuid.uuid4().int % 100) * 100)


def start_platform(stores: Stores, tmp: Path, *, front_door: str = "none", workers: int = 1,
                   dialplan: Path | None = None, extra: str = "", redis_db: int | None = 1,
                   own_database: bool = False, demo_customers: int = 0, paths: str = "",
                   speech: str = "off") -> Platform:
    """``redis_db=None`` / ``own_database``: the platform runs its own embedded Redis / PostgreSQL
    (under its var/), as `make run` does. ``paths``: more lines of the [paths] section. ``speech``:
    the speech service (off unless a test needs it: it loads a 500 MB model)."""
    var_dir = tmp / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    # Prompts are built once by `make test`; share them instead of regenerating per platform.
    shared_prompts = ROOT / "var" / "prompts"
    if shared_prompts.exists() and not (var_dir / "prompts").exists():
        shutil.copytree(shared_prompts, var_dir / "prompts")
    http_port, sip_port = free_port(), free_port()
    worker_port, rtp_port = worker_ports()
    cfg = tmp / "callcenter.toml"
    write_config(cfg, var_dir=var_dir, http_port=http_port, sip_port=sip_port, worker_port=worker_port,
                 rtp_port=rtp_port, front_door=front_door, workers=workers,
                 dialplan=dialplan or ROOT / "sip_config" / "dialplan.toml", extra=extra, paths=paths,
                 speech=speech)
    redis_url = stores.redis_db(redis_db) if redis_db is not None else ""
    if redis_url:
        redis.Redis.from_url(redis_url).flushdb()
    p = Platform(None, f"http://127.0.0.1:{http_port}", sip_port, worker_port, var_dir, cfg,  # type: ignore[arg-type]
                 tmp / "platform.log", stores.api_key, redis_url, "" if own_database else stores.database_url,
                 demo_customers)
    return launch(stores, p)


def launch(stores: Stores, p: Platform) -> Platform:
    """(Re)start the platform process of ``p`` with its configuration, and wait until it is healthy.
    A restart after a crash finds what the crashed one left under the same var/."""
    env = {**os.environ, "DATABASE_URL": p.database_url, "REDIS_URL": p.redis_url, "PYTHONPATH": str(ROOT)}
    log = p.log
    proc = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(p.config), "run",
                             "--demo-customers", str(p.demo_customers)], cwd=ROOT, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    p.proc = proc
    return wait_healthy(p, 60)


def wait_healthy(p: Platform, seconds: float) -> Platform:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise AssertionError(f"platform exited at start:\n{p.log.read_text()[-3000:]}")
        try:
            # No key: a platform with its own database does not know the tests' key yet.
            with urllib.request.urlopen(p.http + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return p
        except OSError:  # refused, or 503 (urllib's HTTPError): not up yet
            pass
        time.sleep(0.2)
    p.stop()
    raise AssertionError(f"platform not healthy in {seconds:.0f} s:\n{p.log.read_text()[-3000:]}")


def _sipp_args(scenario: str, target: str, *, calls: int, rate: int, limit: int | None, keys: dict[str, str] | None,
               service: str, timeout: float, extra: list[str] | None) -> list[str]:
    require("sipp")
    args = ["sipp", "-sf", str(ROOT / "tests" / "sip" / "scenarios" / scenario), "-s", service,
            "-m", str(calls), "-r", str(rate), "-l", str(limit or calls), "-i", "127.0.0.1",
            "-p", str(free_port()), "-mp", str(40000 + (next(_SIPP_MEDIA) % 200) * 100), "-nostdin",
            "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_stat", "-trace_err"]
    for k, v in (keys or {}).items():
        args += ["-key", k, v]
    return args + (extra or []) + [target]


def sipp(scenario: str, target: str, *, calls: int = 1, rate: int = 10, limit: int | None = None,
         keys: dict[str, str] | None = None, service: str = "100", timeout: float = 60,
         extra: list[str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run SIPp (Debian sip-tester) as a real caller; returns the finished process."""
    args = _sipp_args(scenario, target, calls=calls, rate=rate, limit=limit, keys=keys, service=service,
                      timeout=timeout, extra=extra)
    return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout + 30, cwd=cwd)


def sipp_start(scenario: str, target: str, *, keys: dict[str, str] | None = None, service: str = "100",
               timeout: float = 60, extra: list[str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen[str]:
    """The same caller, left running (several callers at once); ``wait()`` for its exit status."""
    args = _sipp_args(scenario, target, calls=1, rate=10, limit=None, keys=keys, service=service, timeout=timeout,
                      extra=extra)
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")


def dtmf_keys(digits: str) -> dict[str, str]:
    names = {"*": "star", "#": "pound"}
    return {f"d{i + 1}": str(SIPP_SHARE / f"dtmf_2833_{names.get(d, d)}.pcap") for i, d in enumerate(digits)}


def reset_acd(stores: Stores) -> None:
    """Remove every agent and queue (a module that builds its own contact center starts clean)."""
    async def reset() -> None:
        conn = await asyncpg.connect(stores.database_url)
        await conn.execute("TRUNCATE queue_members, agent_skills, agent_events")
        await conn.execute("DELETE FROM agents; DELETE FROM queues")
        await conn.close()
    asyncio.run(reset())


@contextmanager
def api_node(p: Platform, tmp: Path) -> Iterator[Platform]:
    """A second control-plane process for ``p`` (``callcenter api``): its own HTTP port, the same
    PostgreSQL and Redis, none of the calls. Yields a Platform whose ``http`` is that node's."""
    tmp.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    cfg = tmp / "api-node.toml"
    cfg.write_text(f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n[paths]\nvar_dir = "{tmp / "var"}"\n'
                   f'prompts = "{ROOT / "sip_config" / "prompts.toml"}"\n')
    env = {**os.environ, "DATABASE_URL": p.database_url, "REDIS_URL": p.redis_url, "PYTHONPATH": str(ROOT)}
    log = tmp / "api-node.log"
    proc = subprocess.Popen([sys.executable, "-m", "callcenter.cli", "--config", str(cfg), "api"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    node = Platform(proc, f"http://127.0.0.1:{http_port}", 0, 0, tmp / "var", cfg, log, p.api_key, p.redis_url,
                    p.database_url)
    try:
        yield wait_healthy(node, 30)
    finally:
        assert node.stop() == 0, log.read_text()[-3000:]

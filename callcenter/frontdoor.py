"""The Kamailio front door: renders its configuration from sip_config/, runs it, and keeps its
dispatcher list in step with the media workers that are alive."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from callcenter.procs import die_with_parent

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


class FrontDoor:
    def __init__(self, template: Path, run_dir: Path, host: str, port: int, children: int = 4):
        self.template = template
        self.run_dir = run_dir
        self.host = host
        self.port = port
        self.children = children
        self.cfg_path = run_dir / "kamailio.cfg"
        self.list_path = run_dir / "dispatcher.list"
        self.ctl_socket = run_dir / "kamailio_ctl"
        self.log_path = run_dir / "kamailio.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._current: tuple[Destination, ...] = ()
        self._lock = asyncio.Lock()

    def render(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = self.template.read_text()
        for key, value in {
            "HOST": self.host, "PORT": str(self.port), "CHILDREN": str(self.children), "DEBUG": "1",
            "CTL_SOCKET": str(self.ctl_socket), "DISPATCHER_LIST": str(self.list_path),
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
        self.render()
        self._current = tuple(sorted(dests, key=lambda d: d.uri))
        self._write_list(self._current)
        self.ctl_socket.unlink(missing_ok=True)
        logf = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            exe, "-DD", "-E", "-f", str(self.cfg_path), "-Y", str(self.run_dir),
            stdout=logf, stderr=logf, start_new_session=True, preexec_fn=die_with_parent)
        logf.close()
        for _ in range(100):
            if self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited at start; see {self.log_path}")
            if self.ctl_socket.exists():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"kamailio did not open its control socket; see {self.log_path}")

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
        exe = kamcmd_path()
        if exe is None:
            return "kamcmd missing"
        proc = await asyncio.create_subprocess_exec(exe, "-s", f"unix:{self.ctl_socket}", *args,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 5)
        except TimeoutError:
            proc.kill()
            return "timeout"
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
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

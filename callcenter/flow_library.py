"""The node's IVR flows (sip_config/ivr/) and calendars: loaded and checked at start, reloaded on
SIGHUP or ``POST /api/v1/ivr/reload``. A reload with any problem changes nothing: the previous set
stays in use and the problems are reported. Calls in progress keep the set they started with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from callcenter.config import ConfigError
from ivr.flow_load import FlowError, FlowSet, Problem, load_flows

log = logging.getLogger("callcenter.flows")


class FlowLibrary:
    def __init__(self, folder: Path, calendars: Path, prompts: set[str], needed: Callable[[], set[str]]):
        self.folder = folder
        self.calendars = calendars
        self.prompts = prompts
        self.needed = needed  # the flows the dial plan routes to
        self.current = self._load()

    def _load(self) -> FlowSet:
        try:
            flows = load_flows(self.folder, self.prompts, self.calendars)
        except FlowError as exc:
            raise ConfigError(f"IVR flows refused:\n{exc}") from None
        missing = sorted(self.needed() - set(flows.flows))
        if missing:
            raise ConfigError(f"{self.folder}: the dial plan routes to flows that do not exist: {missing}")
        return flows

    def reload(self) -> list[str]:
        """Load the flows again; returns the problems (none: the new set is in use)."""
        try:
            loaded = self._load()
        except ConfigError as exc:
            log.error("%s; the previous flows stay in use", exc)
            return str(exc).splitlines()[1:] or [str(exc)]
        if loaded.version == self.current.version:
            return []  # the same files: calls go on with the same version
        self.current = loaded
        log.info("IVR flows reloaded: %s (version %d)", ", ".join(sorted(self.current.flows)), self.current.version)
        return []


    def reload_soon(self) -> None:
        """Reload off the event loop (a signal or a notice handler must not read files on it)."""
        asyncio.get_running_loop().run_in_executor(None, self.reload)


def check_flows(folder: Path, calendars: Path, prompts: set[str], needed: set[str]) -> list[Problem | str]:
    """For check-config: every problem of the flows, none when they would load."""
    try:
        flows = load_flows(folder, prompts, calendars)
    except FlowError as exc:
        return list(exc.problems)
    return [f"{folder}: the dial plan routes to flow {f!r}, which does not exist"
            for f in sorted(needed - set(flows.flows))]

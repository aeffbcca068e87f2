"""The reconciler: acts on every agent whose activity deadline has passed, whichever process set it.

- reserved too long -> ring_no_answer (the offer failed; the agent is paused "no_answer")
- on call past the check time -> still_on_call if the call is alive, else end_call
- wrap-up over -> end_wrap_up

Any control-plane process may run it; the compare-and-set in AgentStore makes two reconcilers (or a
reconciler and a late event) safe: only one transition applies, the other is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from acd.agent_state import ON_DEADLINE, Activity, AgentState, InvalidTransition, Params
from acd.agent_store import AgentStore, Conflict
from bus.redis import REDIS_DOWN

log = logging.getLogger("acd.reconciler")

CallAlive = Callable[[str], Awaitable[bool]]
OnChange = Callable[[str, AgentState, AgentState], None]


@dataclass
class Reconciler:
    store: AgentStore
    call_alive: CallAlive
    on_change: OnChange | None = None  # (event, before, after): for the interaction log (RINGNOANSWER …)
    wrap_up: float = 10.0  # applied when a dead call is found; queues pass their own on the normal path
    interval: float = 0.5

    async def run_once(self, now: float | None = None) -> list[tuple[int, str]]:
        """One pass; returns (agent, event) for every transition made."""
        now = time.time() if now is None else now
        done: list[tuple[int, str]] = []
        for agent_id in await self.store.due(now):
            before = await self.store.get(agent_id)
            if before.deadline == 0 or before.deadline > now:
                continue  # changed since the scan
            event = ON_DEADLINE.get(before.activity)
            if event is None:
                continue
            if before.activity is Activity.ON_CALL and not await self.call_alive(before.call_id):
                event = "end_call"
            try:
                after = await self.store.transition(agent_id, event, Params(wrap_up=self.wrap_up), now=now,
                                                    expect_call=before.call_id)
            except (InvalidTransition, Conflict) as exc:
                log.debug("agent %s: %s", agent_id, exc)  # someone else acted first: fine
                continue
            done.append((agent_id, event))
            if self.on_change is not None:
                self.on_change(event, before, after)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except REDIS_DOWN as exc:
                log.warning("reconciler: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass

"""The ACD on one control-plane node: routing objects shared by the call flows and the API, and the
background work every node does — receive offers for its calls, sweep queues every second, reconcile
agents whose activity timed out, and keep its heartbeat (other nodes read it to tell whether a call
this node held is still alive)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from acd.agent_state import AgentState
from acd.agent_store import AgentStore
from acd.callback import CallbackRunner
from acd.conversation import Record
from acd.directory import Directory
from acd.distributor import Distributor
from acd.offers import OfferBus
from acd.reconciler import Reconciler
from acd.services import QueueServices
from acd.waiting import Waiting
from bus import events as ev
from bus.notifier import Notifier
from bus.redis import REDIS_DOWN
from callcenter import nodes
from callcenter.acd_sync import sync_all
from callcenter.nodes import NodeHeartbeat, node_id
from callcenter.prompts import PromptSet
from callcenter.tasks import Loops
from media.client import CallHandle

log = logging.getLogger("callcenter.acd")

EXTENSION = re.compile(r"[0-9]{1,15}")
NUMBER = re.compile(r"\+?[0-9]{3,20}")


class AcdNode:
    def __init__(self, redis: aioredis.Redis, redis_url: str, pool: asyncpg.Pool, prompts: PromptSet,
                 is_local_call: Callable[[str], bool], registrar: str = "",
                 originate: Callable[[str, float, str], Awaitable[CallHandle]] | None = None,
                 record_for: Callable[[str], Record] | None = None, notifier: Notifier | None = None,
                 outside_uri: str = ""):
        self.notifier = notifier or Notifier(node_id())
        self.node = self.notifier.node
        self.heartbeat = NodeHeartbeat(redis, self.node)
        self.redis = redis
        self.pool = pool
        self.registrar = registrar  # host:port of the front door where agent phones register
        self.outside_uri = outside_uri  # how outside numbers are called: a SIP URI with {number}
        self.agents = AgentStore(redis, self.node)
        self.directory = Directory(redis)
        self.waiting = Waiting(redis)
        self.distributor = Distributor(redis, self.directory, node=self.node)
        self.offers = OfferBus(redis_url)
        self.is_local_call = is_local_call
        self.reconciler = Reconciler(self.agents, self.call_alive, on_change=self._reconciled)
        self.services = QueueServices(self.distributor, self.agents, self.waiting, self.directory, self.offers,
                                      prompts, self.device_uri, self.node, originate, record_for, self.dial_uri)
        self.callbacks = CallbackRunner(self.services)
        self.offers.on_unclaimed = lambda offer: self._spawn(self.callbacks.handle(offer))
        self.agents.on_transition.append(self._changed)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, loops: Loops) -> None:
        async with self.pool.acquire() as conn:
            queues, agents = await sync_all(conn, self.directory)
        log.info("routing directory: %d queues, %d agents", queues, agents)
        await self.heartbeat.beat()
        loops.start("acd.offers", self.offers.run)
        loops.start("acd.sweep", self._sweep)
        loops.start("acd.reconciler", self.reconciler.run)
        loops.start("acd.directory", self._keep_directory)
        loops.start("node.heartbeat", self.heartbeat.run)
        await self.offers.wait_ready()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """After the node's loops have stopped: end the per-agent tasks and leave."""
        pending = list(self._tasks)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=3.0)
        await self.offers.aclose()
        await self.heartbeat.leave()

    # -------------------------------------------------------------- background work
    @staticmethod
    async def _pause(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _sweep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.callbacks.requeue_due()
                await self.distributor.sweep()
            except REDIS_DOWN as exc:
                log.warning("sweep: %s", exc)
            await self._pause(stop, 1.0)

    async def _keep_directory(self, stop: asyncio.Event) -> None:
        """A Redis that came back empty (no persistence, a new server) has lost the routing
        directory; PostgreSQL has it, so it is rebuilt within seconds and routing resumes."""
        while not stop.is_set():
            await self._pause(stop, 2.0)
            try:
                if await self.directory.loaded():
                    continue
                async with self.pool.acquire() as conn:
                    queues, agents = await sync_all(conn, self.directory)
                log.warning("routing directory was missing from Redis: rebuilt from PostgreSQL "
                            "(%d queues, %d agents)", queues, agents)
            except (*REDIS_DOWN, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("routing directory check: %s", exc)

    def _changed(self, event: str, before: AgentState, after: AgentState) -> None:
        if after.routable and not before.routable:
            self._spawn(self._agent_free(after))
        if event == "ring_no_answer":  # the agent's own log: a missed offer pauses the agent
            self.notifier.emit(ev.AgentPause(agent_id=after.agent_id, reason=after.reason, by="system",
                                             call=before.call_id))

    def _reconciled(self, event: str, before: AgentState, _after: AgentState) -> None:
        if event == "end_call":  # the agent's call is gone (its node or worker died): say why they were released
            self.notifier.emit(ev.AgentReleased(agent_id=before.agent_id, reason="call_lost", call=before.call_id))

    async def _agent_free(self, agent: AgentState) -> None:
        try:
            await self.distributor.agent_free(agent)
        except REDIS_DOWN as exc:
            log.warning("routing for agent %s: %s (the sweep will retry)", agent.agent_id, exc)

    # -------------------------------------------------------------- lookups
    async def call_alive(self, call_id: str) -> bool:
        info = await self.distributor.call_info(call_id)
        if info is None:
            return False
        if info.node == self.node:
            return self.is_local_call(call_id) or call_id in self.callbacks.running
        return await nodes.alive(self.redis, info.node)

    async def device_uri(self, agent_id: int) -> str | None:
        device = await self.directory.device(agent_id)
        if device.startswith("ext:"):
            return f"sip:{device[4:]}@{self.registrar}" if self.registrar else None
        return device or None

    def dial_uri(self, kind: str, target: str) -> str | None:
        """Where to call an extension (a phone registered at the front door) or an outside number
        (through the trunk: ``acd.callback_uri``, the way callbacks reach customers)."""
        if kind == "extension" and EXTENSION.fullmatch(target) and self.registrar:
            return f"sip:{target}@{self.registrar}"
        if kind == "number" and NUMBER.fullmatch(target) and self.outside_uri:
            return self.outside_uri.format(number=target)
        return None

"""Offers reach the node that holds the call. The distributor's Lua script publishes every offer on
one channel; each node listens and hands an offer to the caller's flow if the call is one of its own
(any node may have decided: the call's node, or the node where an agent just became free)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from acd.distributor import Offer
from bus.keys import OFFERS_CHANNEL
from bus.redis import REDIS_DOWN, connect

log = logging.getLogger("acd.offers")


class OfferBus:
    def __init__(self, redis_url: str):
        self._redis = connect(redis_url)
        self._inbox: dict[str, asyncio.Queue[Offer]] = {}
        self._ready = asyncio.Event()
        # Offers no flow here waits for: callbacks (any node may run them) or another node's calls.
        self.on_unclaimed: Callable[[Offer], None] | None = None

    def open(self, call_id: str) -> asyncio.Queue[Offer]:
        box = self._inbox.setdefault(call_id, asyncio.Queue())
        return box

    def close(self, call_id: str) -> list[Offer]:
        """Stop waiting for offers for the call; returns any that arrived and were not taken."""
        box = self._inbox.pop(call_id, None)
        left: list[Offer] = []
        while box is not None and not box.empty():
            left.append(box.get_nowait())
        return left

    def deliver(self, offer: Offer) -> bool:
        box = self._inbox.get(offer.call_id)
        if box is None:
            self.deliver_unclaimed(offer)
            return False
        box.put_nowait(offer)
        return True

    def deliver_unclaimed(self, offer: Offer) -> None:
        if self.on_unclaimed is not None:
            self.on_unclaimed(offer)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set (polling, not cancelled: see MediaClient.stop_reading); re-subscribes
        after a lost connection (the sweep re-offers calls whose offer was missed: the agent's reservation
        times out and the call is requeued)."""
        while not stop.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(OFFERS_CHANNEL)
                self._ready.set()
                while not stop.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is None:
                        continue
                    try:
                        self.deliver(Offer.decode(cast(dict[str, Any], msg)["data"]))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("bad offer %r: %s", msg["data"], exc)
            except REDIS_DOWN as exc:
                log.warning("offer channel lost: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()

    async def aclose(self) -> None:
        await self._redis.aclose()

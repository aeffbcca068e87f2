"""Offers reach the node that holds the call. The distributor's Lua script publishes every offer on
one channel; each node listens and hands an offer to the caller's flow if the call is one of its own
(any node may have decided: the call's node, or the node where an agent just became free)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import redis.asyncio as aioredis

from acd.distributor import OFFERS_CHANNEL, Offer

log = logging.getLogger("acd.offers")


class OfferBus:
    def __init__(self, redis_url: str):
        self._redis = aioredis.from_url(redis_url)
        self._inbox: dict[str, asyncio.Queue[Offer]] = {}
        self._ready = asyncio.Event()
        self.unclaimed = 0  # offers for calls no flow here waits for (another node's, or gone)

    def open(self, call_id: str) -> asyncio.Queue[Offer]:
        box = self._inbox.setdefault(call_id, asyncio.Queue())
        return box

    def close(self, call_id: str) -> None:
        self._inbox.pop(call_id, None)

    def deliver(self, offer: Offer) -> bool:
        box = self._inbox.get(offer.call_id)
        if box is None:
            self.unclaimed += 1
            return False
        box.put_nowait(offer)
        return True

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def run(self) -> None:
        """Listen until cancelled; re-subscribes after a lost connection (the sweep re-offers calls
        whose offer was missed: the agent's reservation times out and the call is requeued)."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(OFFERS_CHANNEL)
                self._ready.set()
                async for msg in pubsub.listen():
                    if cast(dict[str, Any], msg)["type"] != "message":
                        continue
                    try:
                        self.deliver(Offer.decode(msg["data"]))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("bad offer %r: %s", msg["data"], exc)
            except (aioredis.ConnectionError, OSError) as exc:
                log.warning("offer channel lost: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()

    async def aclose(self) -> None:
        await self._redis.aclose()

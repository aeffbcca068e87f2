"""One connection policy for every Redis client of the platform.

redis-py's defaults suit a web request, not a live call: 10 retries and a 5 s socket timeout make a
frozen Redis cost a call flow about a minute, and the default asyncio pool raises
``MaxConnectionsError`` the moment its connections are all busy (256 concurrent calls did that).
Here a command waits for a free connection (bounded), retries a lost connection with redis-py's own
``Retry`` and exponential backoff, and gives up within a few seconds so that the caller hears
something sensible and the loop that sent it can try again later.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What "Redis is away" looks like to a caller of redis-py (refused, reset, frozen, no connection free).
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

SOCKET_TIMEOUT = 2.0  # above the longest blocking read issued on a default client (XREADGROUP 0.5 s)
CONNECT_TIMEOUT = 1.0
RETRIES = 2  # a reset connection is retried; a timeout is not (a frozen server would cost 3 timeouts)
POOL_WAIT = 2.0  # seconds a command waits for a free connection before it counts as an outage


def connect(url: str, *, max_connections: int = 64, socket_timeout: float = SOCKET_TIMEOUT) -> aioredis.Redis:
    """A client whose pool blocks (bounded) instead of failing when all connections are busy.
    ``socket_timeout`` must exceed the longest blocking read the client issues."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT,
        socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES,
                    supported_errors=(RedisConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool

"""``callcenter api``: a control-plane node that serves the HTTP API, CTI included, for a platform
whose calls run on other nodes: no media workers, no SIP. It shares the platform's PostgreSQL and
Redis (``DATABASE_URL`` / ``REDIS_URL``); call-control commands it accepts go to the node that runs
the call, and it takes its turn reading the event stream for the interaction log."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from acd.agent_store import AgentStore
from acd.directory import Directory
from bus.redis import connect
from callcenter import api, auth
from callcenter.commands import CallControl
from callcenter.config import Config, ConfigError
from callcenter.cti_socket import CtiSocket
from callcenter.db import create_pool
from callcenter.dialplan import load_dialplan
from callcenter.event_bus import EventBus
from callcenter.flow_library import FlowLibrary
from callcenter.nodes import node_id
from callcenter.notices import API_KEYS, IVR_FLOWS, Notices
from callcenter.prompts import load_prompts
from callcenter.tasks import Loops
from callcenter.webhooks import webhook_sender

log = logging.getLogger("callcenter.api_node")


async def run_api_node(cfg: Config, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    if not cfg.database.url or not cfg.redis.url:
        raise ConfigError("callcenter api joins a running platform: set DATABASE_URL and REDIS_URL to its stores")
    prompts = load_prompts(cfg.path(cfg.paths.prompts), cfg.var_dir / "prompts")
    plan = load_dialplan(cfg.path(cfg.paths.dialplan), set(prompts.texts))
    # The flows too: this node lists them, and checks a reload before it tells the nodes that run calls.
    library = FlowLibrary(cfg.path(cfg.paths.ivr), cfg.path(cfg.paths.calendars), set(prompts.texts),
                          plan.flows_used)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = node_id()
    pool = await create_pool(cfg.database.url)
    redis = connect(cfg.redis.url, max_connections=64)
    loops = Loops()
    events = EventBus(node, redis, pool, cfg.var_dir / "spool")
    events.start(loops)
    control = CallControl(redis, events.sessions, None, events.notifier)
    hooks = webhook_sender(cfg, redis, pool, node)
    loops.start("events.webhooks", hooks.run)
    keys = auth.ApiKeys(pool)
    socket = CtiSocket(cfg.redis.url, redis, keys, node, control=control, pool=pool)
    loops.start("events.socketio", socket.read)
    loops.start("socketio.groups", socket.keep_groups)
    notices = Notices(pool)
    notices.on(API_KEYS, keys.forget)
    notices.on(IVR_FLOWS, library.reload_soon)
    loops.start("postgres.notices", notices.run)
    services = api.Services(pool, redis, None, None, AgentStore(redis, node), Directory(redis), cfg.sip.realm,
                            prompts=frozenset(prompts.texts), loops=loops.status, notifier=events.notifier,
                            events=events.status, control=control, socket=socket, webhooks=hooks, flows=library)
    app = api.make_app(services, [keys], cfg.http.request_timeout, tuple(cfg.http.allowed_origins))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.http.host, cfg.http.port).start()
        log.info("API node %s: HTTP on %s:%d", node, cfg.http.host, cfg.http.port)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await loops.stop()
        await events.close()
        await redis.aclose()
        await pool.close()

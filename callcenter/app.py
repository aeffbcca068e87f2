"""``callcenter run``: wire and supervise everything, stop it all cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from bus.redis import connect
from callcenter import api, auth, demo_data
from callcenter.acd_node import AcdNode
from callcenter.calls import CallRouter
from callcenter.commands import CallControl
from callcenter.config import Config, ConfigError
from callcenter.crm import PostgresCrm
from callcenter.cti_socket import CtiSocket
from callcenter.db import create_pool, migrate
from callcenter.dialplan import load_dialplan
from callcenter.embedded import EmbeddedPostgres, EmbeddedRedis
from callcenter.event_bus import EventBus
from callcenter.flow_library import FlowLibrary, check_flows
from callcenter.frontdoor import Destination, FrontDoor, Policy, kamailio_path
from callcenter.nodes import node_id
from callcenter.notices import API_KEYS, IVR_FLOWS, SIP_CREDENTIALS, Notices
from callcenter.orphans import OrphanCloser
from callcenter.prompts import build as build_prompts
from callcenter.prompts import load_prompts
from callcenter.sip_credentials import CredentialSync, demo_passwords
from callcenter.speech_proc import SpeechProcess
from callcenter.supervisor import Supervisor, WorkerSpec, plan_workers
from callcenter.tasks import Loops
from callcenter.webhooks import webhook_sender
from media.client import CallHandle, MediaClient, OriginateFailed

log = logging.getLogger("callcenter")


@dataclass
class Endpoints:
    database_url: str
    redis_url: str
    redis_server: EmbeddedRedis | None = None  # when embedded: watched and restarted by this node


async def open_stores(cfg: Config, stack: AsyncExitStack) -> Endpoints:
    """Use the configured servers, or start embedded ones under var/ (stopped when ``stack`` closes)."""
    db_url, redis_url = cfg.database.url, cfg.redis.url
    if not db_url:
        pg = EmbeddedPostgres(cfg.var_dir / "pgdata")
        admin = await asyncio.to_thread(pg.start)
        stack.callback(pg.stop)
        db_url = await pg.ensure_database(admin)
        log.info("embedded PostgreSQL under %s", pg.data_dir)
    if not redis_url:
        rd = EmbeddedRedis(cfg.var_dir / "redis")
        redis_url = await asyncio.to_thread(rd.start)
        stack.callback(rd.stop)
        log.info("embedded Redis on %s", redis_url)
        return Endpoints(db_url, redis_url, rd)
    return Endpoints(db_url, redis_url)


def front_door_policy(cfg: Config) -> Policy:
    s = cfg.sip
    return Policy(realm=s.realm, trusted_sources=tuple(s.trusted_sources),
                  max_requests_per_second=s.max_requests_per_second, auth_failures=s.auth_failures,
                  ban_seconds=s.ban_seconds, calls_per_source=s.max_calls_per_source)


def choose_front_door(cfg: Config) -> bool:
    if cfg.sip.front_door == "none":
        return False
    if kamailio_path() is not None:
        return True
    if cfg.sip.front_door == "kamailio":
        raise ConfigError("sip.front_door: 'kamailio' is required but not installed "
                          "(install it: apt-get install kamailio)")
    return False


def default_workers(cfg: Config, front_door: bool) -> int:
    """Behind Kamailio: 16 worker processes per core (about 40 MB each). With the 4-call wheel that
    is ~48 inbound calls per core; bench/sip_capacity measured 256 calls with media on 64 processes
    on 2 cores, so this default leaves the machine headroom for the control plane and databases."""
    if not front_door:
        return 1
    if cfg.media.workers:
        return cfg.media.workers
    return max(4, 16 * (os.cpu_count() or 1))


async def run(cfg: Config, *, demo_customers: int = 200, ready: asyncio.Event | None = None,
              stop: asyncio.Event | None = None) -> None:
    prompts = load_prompts(cfg.path(cfg.paths.prompts), cfg.var_dir / "prompts")
    plan = load_dialplan(cfg.path(cfg.paths.dialplan), set(prompts.texts))
    library = FlowLibrary(cfg.path(cfg.paths.ivr), cfg.path(cfg.paths.calendars), set(prompts.texts),
                          plan.flows_used)
    front = choose_front_door(cfg)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncExitStack() as stack:
        ends = await open_stores(cfg, stack)
        pool = await create_pool(ends.database_url)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
            if demo_customers and not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM customers)"):
                await demo_data.generate(conn, demo_customers, region=cfg.crm.default_region, progress=False)
                log.info("loaded demo data: %d customers", demo_customers)
            if demo_customers and await demo_data.acd(conn):
                log.info("loaded demo queues (support, billing) and agents (extensions 201-204)")
            if demo_customers and await demo_data.ivr_callers(conn):
                log.info("loaded the demo hotline's callers (README: numbers, accounts and PINs)")
            if demo_customers:
                key_file = cfg.var_dir / "dev-api-key"
                token = await auth.development_key(conn, key_file)
                log.warning("development API key (all scopes, also in %s): %s", key_file, token)
                phones_file = cfg.var_dir / "demo-phones.txt"
                await demo_passwords(conn, cfg.sip.realm, phones_file)
                if phones_file.exists():
                    log.warning("demo agents' phone passwords (extension, login, password): %s", phones_file)
        written = await asyncio.to_thread(build_prompts, prompts)
        if written:
            log.info("prompts generated: %s", ", ".join(written))

        redis = connect(ends.redis_url, max_connections=128)
        stack.push_async_callback(redis.aclose)
        loops = Loops()  # the node's background work, stopped before the stores go
        stack.push_async_callback(loops.stop)
        if ends.redis_server is not None:
            loops.start("redis.watchdog", ends.redis_server.watch)
        events = EventBus(node_id(), redis, pool, cfg.var_dir / "spool")
        events.start(loops)
        client = MediaClient(ends.redis_url, on_call=lambda h: router.on_call(h))
        supervisor: Supervisor | None = None

        async def originate(uri: str, timeout: float, caller_id: str) -> CallHandle:
            """A call not tied to an inbound one (callbacks): from the live worker with the fewest calls."""
            live = [spec.worker_id for spec, _cap in supervisor.live()] if supervisor is not None else []
            if not live:
                raise OriginateFailed("no_media_worker")
            load = Counter(h.worker_id for h in client.calls.values())
            return await client.originate(min(live, key=lambda w: load[w]), uri, timeout=timeout, caller_id=caller_id)

        acd = AcdNode(redis, ends.redis_url, pool, prompts, is_local_call=lambda cid: cid in client.calls,
                      registrar=f"{cfg.sip.host}:{cfg.sip.port}" if front else "", originate=originate,
                      record_for=lambda iid: router.record_for(iid), notifier=events.notifier,
                      outside_uri=cfg.acd.callback_uri)
        router = CallRouter(client, events.notifier, events.sessions, plan, prompts, pool, cfg.crm.default_region,
                            acd=acd, voicemail_dir=cfg.var_dir / "voicemail", callback_uri=cfg.acd.callback_uri,
                            flows=library, crm=PostgresCrm(pool))
        loop.add_signal_handler(signal.SIGHUP, library.reload_soon)
        control = CallControl(redis, events.sessions, client, events.notifier, recordings=cfg.var_dir / "recordings")
        loops.start("calls.commands", control.run)
        hooks = webhook_sender(cfg, redis, pool, events.notifier.node)
        loops.start("events.webhooks", hooks.run)
        await client.start()
        transport = Loops()  # the event reader: it stops last, after the workers' final events
        reader = transport.start("media.events", lambda _stop: client.run())
        await acd.start(loops)

        frontdoor: FrontDoor | None = None

        def live_destinations() -> list[Destination]:
            assert supervisor is not None
            return [Destination(f"sip:{spec.host}:{spec.sip_port}", spec.worker_id, capacity)
                    for spec, capacity in supervisor.live()]

        closing = False  # once stopping, a worker that comes up late must not be offered calls again

        async def sync_frontdoor() -> None:
            if frontdoor is not None and supervisor is not None and not closing:
                await frontdoor.sync(live_destinations())

        async def end_dialogs(spec: WorkerSpec) -> int:
            return await frontdoor.end_dialogs(f"{spec.host}:{spec.sip_port}") if frontdoor is not None else 0

        speech = SpeechProcess(cfg, cfg.var_dir / "log") if SpeechProcess.wanted(cfg) else None
        if speech is not None:
            loops.start("speech.service", speech.run)
        router.speech = speech is not None
        count = default_workers(cfg, front)
        specs = plan_workers(cfg, count, single_on_sip_port=not front)
        supervisor = Supervisor(cfg, ends.redis_url, client, specs, cfg.var_dir / "log",
                                on_change=sync_frontdoor, front_door=f"{cfg.sip.host}:{cfg.sip.port}" if front else "",
                                on_dead=end_dialogs, speech=speech.address if speech is not None else "")
        await supervisor.start()
        loops.start("media.supervisor", supervisor.watch)
        credentials: CredentialSync | None = None
        loops.start("records.orphans", OrphanCloser(pool, redis, acd.heartbeat, events.notifier).run)
        if front:
            frontdoor = FrontDoor(cfg.path(cfg.paths.kamailio_template), cfg.var_dir / "kamailio",
                                  cfg.sip.host, cfg.sip.port, policy=front_door_policy(cfg))
            await frontdoor.start(live_destinations())
            credentials = CredentialSync(pool, frontdoor.push_credentials)
            await credentials.sync_once()
            loops.start("frontdoor.credentials", credentials.run)
            log.info("front door: Kamailio on %s:%d, %d media workers", cfg.sip.host, cfg.sip.port, count)
        else:
            why = ("sip.front_door is \"none\"" if cfg.sip.front_door == "none" else
                   "Kamailio is not installed (apt-get install kamailio)")
            log.warning("no front door (%s): one media worker answers on %s:%d and holds at most %d calls",
                        why, cfg.sip.host, cfg.sip.port, max(s.capacity for s in supervisor.slots.values()))

        services = api.Services(pool, redis, supervisor, frontdoor, acd.agents, acd.directory, cfg.sip.realm,
                                credentials.changed if credentials is not None else None, frozenset(prompts.texts),
                                loops=lambda: [*transport.status(), *loops.status()], redis_server=ends.redis_server,
                                notifier=events.notifier, events=events.status, control=control, webhooks=hooks,
                                flows=library, speech=speech)
        keys = auth.ApiKeys(pool)
        socket = CtiSocket(ends.redis_url, redis, keys, acd.node, control=control, pool=pool)
        loops.start("events.socketio", socket.read)
        loops.start("socketio.groups", socket.keep_groups)
        services.socket = socket
        notices = Notices(pool)  # a revoked key or a new phone password, from any node or the CLI
        notices.on(API_KEYS, keys.forget)
        if credentials is not None:
            notices.on(SIP_CREDENTIALS, credentials.changed)
        notices.on(IVR_FLOWS, library.reload_soon)
        loops.start("postgres.notices", notices.run)
        app = api.make_app(services, [keys], cfg.http.request_timeout, tuple(cfg.http.allowed_origins))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.http.host, cfg.http.port)
        await site.start()
        log.info("HTTP on %s:%d", cfg.http.host, cfg.http.port)
        if ready is not None:
            ready.set()

        await stop.wait()
        log.info("stopping: no new calls, hanging up, flushing the record")
        watchdog = asyncio.create_task(_report_slow_stop(15.0))
        # New calls are refused first; the calls up are hung up while the front door still carries
        # their BYEs; the front door goes last.
        closing = True
        if frontdoor is not None:
            await frontdoor.sync([])
        await supervisor.stop()
        if frontdoor is not None:
            await frontdoor.stop()
        await client.drain()
        for wid in list(supervisor.slots):
            client.fail_worker(wid, cause="platform_shutdown")
        await client.stop_reading(reader)
        await transport.stop()
        await loops.stop()
        await client.stop()
        await acd.stop()
        await runner.cleanup()
        await events.close()
        watchdog.cancel()
        log.info("stopped; %d events sent, %d interaction events written", events.writer.sent,
                 events.log.written_events)


async def _report_slow_stop(after: float) -> None:
    """If stopping takes too long, say what is still running (the operator's first question)."""
    await asyncio.sleep(after)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            stack = "".join(f"\n    {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in task.get_stack())
            log.warning("still running after %.0f s of stopping: %s%s", after, task.get_name(), stack)


async def check(cfg: Config) -> list[str]:
    """Everything `run` would refuse, without starting anything. Returns problems found."""
    problems: list[str] = []
    try:
        prompts = load_prompts(cfg.path(cfg.paths.prompts), cfg.var_dir / "prompts")
        plan = load_dialplan(cfg.path(cfg.paths.dialplan), set(prompts.texts))
        problems += [str(p) for p in check_flows(cfg.path(cfg.paths.ivr), cfg.path(cfg.paths.calendars),
                                                 set(prompts.texts), plan.flows_used())]
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        front = choose_front_door(cfg)
    except ConfigError as exc:
        problems.append(str(exc))
        front = False
    if front:
        fd = FrontDoor(cfg.path(cfg.paths.kamailio_template), cfg.var_dir / "kamailio-check",
                       cfg.sip.host, cfg.sip.port, policy=front_door_policy(cfg))
        err = await fd.check()
        if err:
            problems.append(f"{cfg.paths.kamailio_template}: Kamailio refuses it:\n{err}")
    if cfg.database.url:
        try:
            conn = await asyncpg.connect(cfg.database.url, timeout=5)
            await conn.close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"database.url: cannot connect: {exc}")
    return problems

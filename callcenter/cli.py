"""The ``callcenter`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from contextlib import AsyncExitStack

from callcenter.config import Config, ConfigError, load_config


def _load(args: argparse.Namespace, **overrides: object) -> Config:
    cfg = load_config(args.config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, value)
    return cfg


async def _with_db(cfg: Config, fn) -> object:  # type: ignore[no-untyped-def]
    from callcenter.app import open_stores
    from callcenter.db import create_pool

    async with AsyncExitStack() as stack:
        ends = await open_stores(cfg, stack)
        pool = await create_pool(ends.database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                return await fn(conn)
        finally:
            await pool.close()


def cmd_run(args: argparse.Namespace) -> int:
    from callcenter.app import run

    cfg = _load(args, **{"http.port": args.http_port, "sip.port": args.sip_port, "media.workers": args.workers})
    logging.getLogger().setLevel(cfg.log.level)
    asyncio.run(run(cfg, demo_customers=args.demo_customers))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from callcenter.api_node import run_api_node

    cfg = _load(args, **{"http.port": args.http_port})
    logging.getLogger().setLevel(cfg.log.level)
    asyncio.run(run_api_node(cfg))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from callcenter.db import migrate

    applied = asyncio.run(_with_db(_load(args), migrate))
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")  # type: ignore[arg-type]
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from callcenter import demo_data
    from callcenter.db import migrate

    cfg = _load(args)

    async def go(conn):  # type: ignore[no-untyped-def]
        await migrate(conn)
        return await demo_data.generate(conn, args.customers, region=cfg.crm.default_region, seed=args.seed,
                                        progress=True)

    counts = asyncio.run(_with_db(cfg, go))
    print(", ".join(f"{v} {k}" for k, v in counts.items()))  # type: ignore[attr-defined]
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from callcenter import auth
    from callcenter.db import migrate

    async def go(conn):  # type: ignore[no-untyped-def]
        await migrate(conn)
        if args.key_command == "create":
            try:
                scopes = auth.check_scopes(s for item in args.scope for s in item.split(","))
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
            token = await auth.create_key(conn, args.name, scopes)
            print(f"API key {args.name!r} ({', '.join(scopes)}); shown once, store it now:\n{token}")
        elif args.key_command == "list":
            for k in await auth.list_keys(conn):
                state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
                used = f"{k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never"
                print(f"{k['id']}  {k['name']:<20} {','.join(k['scopes']):<24} {state:<24} last used {used}")
        elif not await auth.revoke_key(conn, args.id):
            print(f"no active key {args.id!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.id}")
        return 0

    return int(asyncio.run(_with_db(_load(args), go)))  # type: ignore[call-overload]


def cmd_sip_password(args: argparse.Namespace) -> int:
    from callcenter.db import migrate
    from callcenter.sip_credentials import CredentialError, set_password

    cfg = _load(args)

    async def go(conn):  # type: ignore[no-untyped-def]
        await migrate(conn)
        try:
            ext, password = await set_password(conn, args.login, cfg.sip.realm, args.password)
        except CredentialError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"phone of {args.login}: user {ext}, realm {cfg.sip.realm}, password (shown once):\n{password}")
        return 0

    return int(asyncio.run(_with_db(cfg, go)))  # type: ignore[call-overload]


def cmd_spool(args: argparse.Namespace) -> int:
    from callcenter.db import create_pool
    from callcenter.interactions import InteractionLog

    cfg = _load(args)
    spool = cfg.var_dir / "spool"
    if args.spool_command == "list":
        for path in sorted(spool.glob("*.jsonl")) if spool.exists() else []:
            lines = path.read_text().splitlines()
            reasons = sorted({json.loads(ln).get("reason", "") for ln in lines} - {""})
            print(f"{path.name}: {len(lines)} items" + (f"; refused: {'; '.join(reasons)[:300]}" if reasons else ""))
        return 0

    async def go() -> tuple[int, int]:
        from callcenter.app import open_stores

        async with AsyncExitStack() as stack:
            ends = await open_stores(cfg, stack)
            pool = await create_pool(ends.database_url, min_size=1, max_size=2)
            try:
                return await InteractionLog(pool, spool).replay_rejected()
            finally:
                await pool.close()

    written, still = asyncio.run(go())
    print(f"written: {written}; still refused: {still}" + (f" (kept in {spool})" if still else ""))
    return 1 if still else 0


def cmd_records(args: argparse.Namespace) -> int:
    from bus.redis import connect
    from callcenter.app import open_stores
    from callcenter.db import create_pool, migrate
    from callcenter.event_bus import rebuild
    from callcenter.interactions import InteractionLog

    cfg = _load(args)

    async def go() -> tuple[int, int, int, int]:
        async with AsyncExitStack() as stack:
            ends = await open_stores(cfg, stack)
            pool = await create_pool(ends.database_url, min_size=1, max_size=2)
            stack.push_async_callback(pool.close)
            redis = connect(ends.redis_url)
            stack.push_async_callback(redis.aclose)
            async with pool.acquire() as conn:
                await migrate(conn)
            log = InteractionLog(pool, cfg.var_dir / "spool")
            read, bad = await rebuild(redis, log)
            return read, bad, log.written_events, log.rejected

    read, bad, written, refused = asyncio.run(go())
    print(f"events read from the stream: {read}; written: {written} (the rest were there already); "
          f"unreadable: {bad}; refused: {refused}")
    return 1 if bad or refused else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from callcenter.app import check

    cfg = _load(args)
    problems = asyncio.run(check(cfg))
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{args.config or 'sip_config/callcenter.toml'}: OK")
    return 1 if problems else 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from callcenter.prompts import build, load_prompts

    cfg = _load(args)
    ps = load_prompts(cfg.path(cfg.paths.prompts), cfg.var_dir / "prompts")
    written = build(ps, force=args.force)
    print(f"prompts in {ps.out_dir}: {len(written)} written, {len(ps.texts) - len(written)} up to date")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="callcenter", description="Contact center platform")
    ap.add_argument("--config", help="TOML file (default sip_config/callcenter.toml)")
    # ... before or after the command: `callcenter check-config --config FILE` too
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML file (default sip_config/callcenter.toml)")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", parents=[common], help="run the platform")
    r.add_argument("--http-port", type=int)
    r.add_argument("--sip-port", type=int)
    r.add_argument("--workers", type=int)
    r.add_argument("--demo-customers", type=int, default=200,
                   help="customers to create when the database is empty (0: none)")
    r.set_defaults(fn=cmd_run)

    an = sub.add_parser("api", parents=[common],
                        help="run another node of a platform: the HTTP API and CTI, no media "
                             "(DATABASE_URL and REDIS_URL: the platform's)")
    an.add_argument("--http-port", type=int)
    an.set_defaults(fn=cmd_api)

    db = sub.add_parser("db", parents=[common], help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    m = dbsub.add_parser("migrate", parents=[common], help="apply pending migrations")
    m.set_defaults(fn=cmd_migrate)

    d = sub.add_parser("demo-data", parents=[common], help="create demo customers with accounts, orders, tickets")
    d.add_argument("--customers", type=int, default=1000)
    d.add_argument("--seed", type=int, default=None)
    d.set_defaults(fn=cmd_demo_data)

    k = sub.add_parser("api-key", parents=[common], help="manage API keys (scopes: read, control, configure)")
    ksub = k.add_subparsers(dest="key_command", required=True)
    kc = ksub.add_parser("create", parents=[common], help="create a key and print it (once)")
    kc.add_argument("--name", required=True)
    kc.add_argument("--scope", action="append", required=True,
                    help="read, control (agent status, calls), configure (queues, agents); repeat or comma-separate")
    ksub.add_parser("list", parents=[common], help="list keys (never their secrets)")
    kr = ksub.add_parser("revoke", parents=[common], help="revoke a key by its id")
    kr.add_argument("id")
    k.set_defaults(fn=cmd_api_key)

    sp = sub.add_parser("sip-password", parents=[common],
                        help="give an agent's phone a new SIP password (printed once)")
    sp.add_argument("login")
    sp.add_argument("--password", help="use this one (12+ characters) instead of a generated one")
    sp.set_defaults(fn=cmd_sip_password)

    sl = sub.add_parser("spool", parents=[common], help="records the database refused (var/spool/rejected-*.jsonl)")
    slsub = sl.add_subparsers(dest="spool_command", required=True)
    slsub.add_parser("list", parents=[common], help="spooled files, their size and why the database refused them")
    slsub.add_parser("replay", parents=[common], help="try the refused records again (after fixing the cause)")
    sl.set_defaults(fn=cmd_spool)

    rc = sub.add_parser("records", parents=[common], help="the interaction record and the event stream")
    rcsub = rc.add_subparsers(dest="records_command", required=True)
    rcsub.add_parser("rebuild", parents=[common],
                     help="write the record from the event stream into the configured database "
                          "(events it holds already are skipped)")
    rc.set_defaults(fn=cmd_records)

    c = sub.add_parser("check-config", parents=[common], help="validate the configuration without starting")
    c.set_defaults(fn=cmd_check_config)

    p = sub.add_parser("prompts", parents=[common], help="generate prompt WAVs from sip_config/prompts.toml")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_prompts)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

from __future__ import annotations

import asyncpg
import phonenumbers

from acd.directory import Directory
from callcenter import demo_data
from callcenter.acd_sync import sync_all
from tests.conftest import Stores, fresh_redis


async def test_demo_data_is_complete_and_consistent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM customers")
        counts = await demo_data.generate(conn, 300, region="US", seed=7, progress=False)
        assert counts["customers"] == 300 and counts["accounts"] == 300
        assert counts["orders"] > 300 and counts["transactions"] > 1000 and counts["tickets"] > 50
        assert await conn.fetchval("SELECT count(*) FROM customers") == before + 300
        phones = [r["e164"] for r in await conn.fetch("SELECT e164 FROM customer_phones")]
        assert all(phonenumbers.is_possible_number(phonenumbers.parse(p)) for p in phones)
        tiers = {r["value_tier"] for r in await conn.fetch("SELECT DISTINCT value_tier FROM customers")}
        assert tiers == {"standard", "silver", "gold", "vip"}
        kinds = {r["kind"] for r in await conn.fetch("SELECT DISTINCT kind FROM customers")}
        assert kinds == {"individual", "company"}
        # Every purchase with an order points at an order of the same customer.
        bad = await conn.fetchval("SELECT count(*) FROM transactions t JOIN orders o ON o.id = t.order_id "
                                  "WHERE o.customer_id <> t.customer_id")
        assert bad == 0
        # Caller-ID lookup goes through the E.164 index.
        await conn.execute("ANALYZE customer_phones")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT customer_id FROM customer_phones WHERE e164 = '+15555550100'"))
        assert "customer_phones_e164" in plan


async def test_demo_queues_and_agents_are_valid_and_routable(pool: asyncpg.Pool, stores: Stores) -> None:
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()  # rolled back: other tests keep their own queues
        try:
            await conn.execute("DELETE FROM queues; DELETE FROM agents")
            assert await demo_data.acd(conn)
            assert not await demo_data.acd(conn)  # only once
            async with fresh_redis(stores, 12) as r:
                directory = Directory(r)
                assert await sync_all(conn, directory) == (2, 4)
                billing = await directory.settings("billing")
                assert billing is not None and [s.after for s in billing.routing] == [0, 30, 60]
                assert await directory.memberships(
                    await conn.fetchval("SELECT id FROM agents WHERE login = 'alice'")) == {"billing": 0,
                                                                                             "support": 0}
                assert await directory.device(await conn.fetchval("SELECT id FROM agents WHERE login = 'chen'")) \
                    == "ext:203"
        finally:
            await tr.rollback()

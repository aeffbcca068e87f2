"""The IVR's CRM (callcenter/crm.py) on the real PostgreSQL with the demo hotline's callers: who a
number belongs to, PINs (argon2 hashes, wrong ones counted, phone access locked), the self-service
lookups and new tickets; an unreachable database is LookupFailed."""

from __future__ import annotations

import asyncpg
import pytest

from callcenter import crm, demo_data
from callcenter.crm import PostgresCrm
from ivr.services import LookupFailed
from tests.conftest import Stores


@pytest.fixture
async def db(pool: asyncpg.Pool) -> PostgresCrm:
    async with pool.acquire() as conn:
        await demo_data.ivr_callers(conn)
        await conn.execute("UPDATE accounts SET pin_failures = 0, phone_locked_until = NULL "
                           "WHERE number LIKE '1000000_'")
    return PostgresCrm(pool)


async def test_the_number_finds_one_customer_or_several(db: PostgresCrm) -> None:
    assert [c.first_name for c in await db.customers_by_phone("+15550100001")] == ["Ann"]
    assert sorted(c.first_name for c in await db.customers_by_phone("+15550100002")) == ["Ben", "Cora"]
    assert await db.customers_by_phone("+15550109999") == []


async def test_pins_are_hashed_and_checked(db: PostgresCrm, pool: asyncpg.Pool) -> None:
    stored = await pool.fetchval("SELECT pin_hash FROM accounts WHERE number = '10000001'")
    assert stored.startswith("$argon2id$") and "1234" not in stored
    ok = await db.check_pin("10000001", "1234")
    assert ok.customer is not None and ok.customer.first_name == "Ann" and ok.customer.value_tier == "gold"
    assert (await db.check_pin("10000001", "9999")).reason == "wrong_pin"
    assert (await db.check_pin("99999999", "1234")).reason == "unknown_account"


async def test_repeated_wrong_pins_lock_phone_access(db: PostgresCrm, pool: asyncpg.Pool) -> None:
    for _ in range(crm.LOCK_AFTER - 1):
        result = await db.check_pin("10000002", "0000")
        assert result.reason == "wrong_pin" and result.locked_until is None
    assert (await db.check_pin("10000002", "2222")).customer is not None  # a right PIN starts the count again
    for _ in range(crm.LOCK_AFTER - 1):
        await db.check_pin("10000002", "0000")
    locking = await db.check_pin("10000002", "0000")
    assert locking.reason == "wrong_pin" and locking.locked_until is not None
    assert (await db.check_pin("10000002", "2222")).reason == "locked"  # even the right PIN, for a while
    until = await pool.fetchval("SELECT phone_locked_until - now() FROM accounts WHERE number = '10000002'")
    assert crm.LOCK_FOR.total_seconds() - 60 < until.total_seconds() <= crm.LOCK_FOR.total_seconds()


async def test_lookups(db: PostgresCrm) -> None:
    ann = (await db.customers_by_phone("+15550100001"))[0]
    balance = await db.lookup("balance", ann.id)
    assert balance is not None and balance["balance"] == "1250.75" and balance["points"] == 4200
    order = await db.lookup("last_order", ann.id)
    assert order is not None and order["status"] == "shipped" and len(order["placed"]) == 10
    ticket = await db.lookup("open_ticket", ann.id)
    assert ticket is not None and ticket["status"] == "open" and ticket["digits"].isdigit()
    dev = (await db.customers_by_phone("+15550100004"))[0]
    assert await db.lookup("last_order", dev.id) is None and await db.lookup("open_ticket", dev.id) is None


async def test_a_new_ticket_has_a_number_to_read_out(db: PostgresCrm, pool: asyncpg.Pool) -> None:
    dev = (await db.customers_by_phone("+15550100004"))[0]
    number = await db.create_ticket(dev.id, "incident", "Fault reported by phone", "normal", "")
    assert number.startswith("T") and number[1:].isdigit()
    row = await pool.fetchrow("SELECT customer_id, status, kind FROM tickets WHERE number = $1", number)
    assert dict(row) == {"customer_id": dev.id, "status": "open", "kind": "incident"}


async def test_an_unreachable_database_is_a_failed_lookup(stores: Stores) -> None:
    dead = await asyncpg.create_pool(stores.database_url, min_size=0, max_size=1)
    assert dead is not None
    await dead.close()
    with pytest.raises(LookupFailed):
        await PostgresCrm(dead).customers_by_phone("+15550100001")
    with pytest.raises(LookupFailed):
        await PostgresCrm(dead).check_pin("10000001", "1234")

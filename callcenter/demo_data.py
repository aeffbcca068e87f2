"""Demo CRM data: realistic customers (Faker), E.164 phones, accounts, orders, transactions, tickets.

Rows are made in Python and loaded with COPY, so 10,000 customers take seconds, not minutes.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from faker import Faker
from tqdm import tqdm

TIERS = (("standard", 70), ("silver", 17), ("gold", 9), ("vip", 4))
ORDER_STATUS = (("delivered", 55), ("shipped", 12), ("paid", 10), ("placed", 8), ("cancelled", 8), ("returned", 7))
TICKET_KIND = (("service_request", 45), ("inquiry", 30), ("complaint", 20), ("incident", 5))
TICKET_STATUS = (("closed", 50), ("resolved", 20), ("open", 20), ("pending", 10))
SUBJECTS = {
    "service_request": ["Change delivery address", "Update billing details", "Increase credit limit",
                        "Replace damaged card", "Cancel subscription", "Reset online banking access"],
    "inquiry": ["Question about my invoice", "When will my order arrive?", "Loyalty points balance",
                "Opening hours of the store", "Warranty conditions"],
    "complaint": ["Order arrived damaged", "Charged twice", "Rude phone support", "Late delivery",
                  "Refund not received"],
    "incident": ["Card blocked abroad", "Suspicious transaction", "App login fails"],
}


def _pick(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _phone(rng: random.Random, region: str) -> str:
    """A well-formed E.164 number in the region's numbering plan (US/GB/DE, else +1)."""
    if region == "GB":
        return f"+447{rng.randint(100000000, 999999999)}"
    if region == "DE":
        return f"+4915{rng.randint(1, 9)}{rng.randint(10000000, 99999999)}"
    return f"+1{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}{rng.randint(2, 9)}" \
           f"{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"


async def _ids(conn: asyncpg.Connection, table: str, n: int) -> list[int]:
    if n == 0:
        return []
    rows = await conn.fetch(f"SELECT nextval('{table}_id_seq') AS id FROM generate_series(1, $1)", n)
    return [r["id"] for r in rows]


async def generate(conn: asyncpg.Connection, customers: int, region: str = "US", seed: int | None = None,
                   progress: bool = True) -> dict[str, int]:
    rng = random.Random(seed)
    fake = Faker({"US": "en_US", "GB": "en_GB", "DE": "de_DE"}.get(region, "en_US"))
    fake.seed_instance(seed if seed is not None else rng.randint(0, 2**31))
    now = datetime.now(UTC)
    cust_ids = await _ids(conn, "customers", customers)
    tag = f"{now:%y%m%d%H%M%S}{rng.randint(0, 999):03d}"

    cust: list[tuple[Any, ...]] = []
    phones: list[tuple[Any, ...]] = []
    contacts: list[tuple[Any, ...]] = []
    accounts: list[tuple[Any, ...]] = []
    orders: list[tuple[Any, ...]] = []
    tx: list[tuple[Any, ...]] = []
    tickets: list[tuple[Any, ...]] = []
    per_customer: list[tuple[int, int, int]] = []  # orders, transactions, tickets wanted

    bar = tqdm(total=customers, desc="customers", unit="cust", disable=not progress)
    for cid in cust_ids:
        company = rng.random() < 0.12
        created = now - timedelta(days=rng.randint(30, 3650))
        if company:
            name = fake.company()
            cust.append((cid, "company", None, None, name, name, fake.company_email(), None, "en", "active",
                         _pick(rng, TIERS), fake.street_address(), fake.city(), fake.postcode(), region, created))
            for _ in range(rng.randint(1, 3)):
                contacts.append((cid, fake.name(), rng.choice(["Purchasing", "Accounts", "CEO", "IT", "Office"]),
                                 fake.email(), _phone(rng, region), created))
        else:
            first, last = fake.first_name(), fake.last_name()
            status = "active" if rng.random() < 0.9 else rng.choice(["inactive", "prospect", "blocked"])
            cust.append((cid, "individual", first, last, None, f"{first} {last}", fake.email(),
                         fake.date_of_birth(minimum_age=18, maximum_age=90), "en", status, _pick(rng, TIERS),
                         fake.street_address(), fake.city(), fake.postcode(), region, created))
        for i in range(1 if rng.random() < 0.7 else 2):
            phones.append((cid, _phone(rng, region), "mobile" if i == 0 else rng.choice(["home", "work"]), i == 0))
        per_customer.append((rng.randint(0, 6), rng.randint(2, 12), rng.choices([0, 1, 2, 3], [50, 30, 15, 5])[0]))
        bar.update(1)
    bar.close()

    acc_ids = await _ids(conn, "accounts", customers)
    order_total = sum(o for o, _, _ in per_customer)
    order_ids = iter(await _ids(conn, "orders", order_total))
    for idx, (cid, acc_id) in enumerate(zip(cust_ids, acc_ids, strict=True)):
        n_orders, n_tx, n_tickets = per_customer[idx]
        opened = cust[idx][-1]
        balance = Decimal(rng.randint(-50000, 2500000)) / 100
        points = rng.randint(0, 20000)
        accounts.append((acc_id, cid, f"AC{tag}{idx:06d}", rng.choice(["checking", "savings", "credit", "loyalty"]),
                         "USD", balance, points, "open", opened))
        mine = []
        for k in range(n_orders):
            oid = next(order_ids)
            placed = now - timedelta(days=rng.randint(0, 720), minutes=rng.randint(0, 1440))
            status = _pick(rng, ORDER_STATUS)
            total = Decimal(rng.randint(500, 60000)) / 100
            orders.append((oid, cid, f"O{tag}{idx:06d}{k}", status, total, "USD", rng.randint(1, 6), placed,
                           placed + timedelta(days=rng.randint(0, 10)),
                           f"1Z{rng.randint(10**9, 10**10 - 1)}" if status in ("shipped", "delivered") else None))
            mine.append((oid, placed, total, status))
        for _ in range(n_tx):
            at = now - timedelta(days=rng.randint(0, 365), seconds=rng.randint(0, 86400))
            kind = rng.choice(["deposit", "withdrawal", "purchase", "fee", "interest", "points"])
            amount = Decimal(rng.randint(100, 200000)) / 100
            tx.append((acc_id, cid, None, at, kind, -amount if kind in ("withdrawal", "purchase", "fee") else amount,
                       rng.randint(1, 500) if kind == "points" else 0, fake.bs().capitalize()))
        for oid, placed, total, status in mine:
            tx.append((acc_id, cid, oid, placed, "purchase", -total, int(total), "Order payment"))
            if status == "returned":
                tx.append((acc_id, cid, oid, placed + timedelta(days=14), "refund", total, 0, "Order refund"))
        for k in range(n_tickets):
            kind = _pick(rng, TICKET_KIND)
            status = _pick(rng, TICKET_STATUS)
            opened_t = now - timedelta(days=rng.randint(0, 400), minutes=rng.randint(0, 1440))
            closed = opened_t + timedelta(days=rng.randint(0, 20)) if status in ("resolved", "closed") else None
            tickets.append((cid, f"T{tag}{idx:06d}{k}", kind, status,
                            rng.choice(["low", "normal", "normal", "high", "urgent"]), rng.choice(SUBJECTS[kind]),
                            fake.sentence(nb_words=14), mine[0][0] if mine and kind == "complaint" else None,
                            opened_t, closed or opened_t, closed))

    async with conn.transaction():
        await conn.copy_records_to_table("customers", records=cust, columns=(
            "id", "kind", "first_name", "last_name", "company_name", "display_name", "email", "birth_date",
            "language", "status", "value_tier", "street", "city", "postal_code", "country", "created_at"))
        await conn.copy_records_to_table("customer_phones", records=phones,
                                         columns=("customer_id", "e164", "kind", "is_primary"))
        await conn.copy_records_to_table("contacts", records=contacts, columns=(
            "customer_id", "name", "role", "email", "phone_e164", "created_at"))
        await conn.copy_records_to_table("accounts", records=accounts, columns=(
            "id", "customer_id", "number", "kind", "currency", "balance", "points", "status", "opened_at"))
        await conn.copy_records_to_table("orders", records=orders, columns=(
            "id", "customer_id", "number", "status", "total", "currency", "items", "placed_at", "updated_at",
            "tracking"))
        await conn.copy_records_to_table("transactions", records=tx, columns=(
            "account_id", "customer_id", "order_id", "at", "kind", "amount", "points", "description"))
        await conn.copy_records_to_table("tickets", records=tickets, columns=(
            "customer_id", "number", "kind", "status", "priority", "subject", "description", "order_id",
            "opened_at", "updated_at", "closed_at"))
    return {"customers": len(cust), "phones": len(phones), "contacts": len(contacts), "accounts": len(accounts),
            "orders": len(orders), "transactions": len(tx), "tickets": len(tickets)}


DEMO_QUEUES = {
    "support": {"strategy": "longest_idle", "callback_key": "1", "announce_every": 45, "survey": "survey"},
    "billing": {"strategy": "fewest_calls", "exit_key": "0", "overflow": {"kind": "voicemail"},
                "routing": [{"after": 0, "require": {"billing": 4}}, {"after": 30, "require": {"billing": 2}},
                            {"after": 60, "require": {}}]},
}
# login, name, extension, skills, queues
DEMO_AGENTS = [
    ("alice", "Alice Martin", "201", {"billing": 5, "english": 5}, ["support", "billing"]),
    ("bruno", "Bruno Silva", "202", {"billing": 2, "spanish": 5, "english": 4}, ["support", "billing"]),
    ("chen", "Chen Wei", "203", {"english": 5}, ["support"]),
    ("dana", "Dana Cohen", "204", {"billing": 4, "english": 5}, ["billing"]),
]


async def acd(conn: asyncpg.Connection) -> bool:
    """Demo queues, skills and agents (phones register as extensions 201-204 at the front door), unless
    queues exist already. Returns whether it wrote anything."""
    from acd.models import QueueSettings

    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM queues)"):
        return False
    async with conn.transaction():
        skills = {s for _l, _n, _e, sk, _q in DEMO_AGENTS for s in sk}
        for s in sorted(skills):
            await conn.execute("INSERT INTO skills (name) VALUES ($1) ON CONFLICT DO NOTHING", s)
        for name, settings in DEMO_QUEUES.items():
            valid = QueueSettings.model_validate_json(json.dumps(settings))
            await conn.execute("INSERT INTO queues (name, title, settings) VALUES ($1, $2, $3)", name,
                               name.title(), valid.model_dump_json())
        for position, (login, full, ext, sk, queues) in enumerate(DEMO_AGENTS):
            aid = await conn.fetchval("INSERT INTO agents (login, name, extension) VALUES ($1, $2, $3) "
                                      "ON CONFLICT (login) DO UPDATE SET name = excluded.name RETURNING id",
                                      login, full, ext)
            for s, level in sk.items():
                await conn.execute("INSERT INTO agent_skills (agent_id, skill_id, proficiency) SELECT $1, id, $3 "
                                   "FROM skills WHERE name = $2 ON CONFLICT DO NOTHING", aid, s, level)
            for q in queues:
                await conn.execute("INSERT INTO queue_members (queue_id, agent_id, position) SELECT id, $2, $3 "
                                   "FROM queues WHERE name = $1", q, aid, position)
    return True


# Callers to try the demo hotline with (README): number, name, tier, account, PIN, balance, points,
# last order (status, total, days ago) or None, open ticket subject or None. Two share a number, so
# that number is asked for an account and a PIN.
IVR_CALLERS = [
    ("+15550100001", "Ann", "Lee", "gold", "10000001", "1234", "1250.75", 4200, ("shipped", "89.90", 3),
     "Charged twice"),
    ("+15550100002", "Ben", "Ortiz", "standard", "10000002", "2222", "-15.20", 0, ("delivered", "12.00", 40), None),
    ("+15550100002", "Cora", "Ortiz", "vip", "10000003", "3333", "98000.00", 51000, None, None),
    ("+15550100004", "Dev", "Patel", "standard", "10000004", "4444", "0.00", 0, None, None),
]


async def ivr_callers(conn: asyncpg.Connection) -> bool:
    """The demo hotline's known callers (IVR_CALLERS), unless their accounts exist. Returns whether it
    wrote anything."""
    from callcenter.crm import hash_pin

    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE number = $1)", IVR_CALLERS[0][4]):
        return False
    now = datetime.now(UTC)
    async with conn.transaction():
        for phone, first, last, tier, account, pin, balance, points, order, ticket in IVR_CALLERS:
            cid = await conn.fetchval(
                "INSERT INTO customers (kind, first_name, last_name, display_name, value_tier, country) "
                "VALUES ('individual', $1, $2, $1 || ' ' || $2, $3, 'US') RETURNING id", first, last, tier)
            await conn.execute("INSERT INTO customer_phones (customer_id, e164, is_primary) VALUES ($1, $2, true)",
                               cid, phone)
            await conn.execute("INSERT INTO accounts (customer_id, number, kind, balance, points, pin_hash) "
                               "VALUES ($1, $2, 'checking', $3, $4, $5)", cid, account, Decimal(balance), points,
                               hash_pin(pin))
            if order:
                status, total, days = order
                placed = now - timedelta(days=days)
                await conn.execute("INSERT INTO orders (customer_id, number, status, total, placed_at, updated_at) "
                                   "VALUES ($1, $2, $3, $4, $5, $5)", cid, f"5{account}", status, Decimal(total),
                                   placed)
            if ticket:
                await conn.execute("INSERT INTO tickets (customer_id, number, kind, status, subject, opened_at, "
                                   "updated_at) VALUES ($1, $2, 'complaint', 'open', $3, $4, $4)",
                                   cid, f"T{account[-6:]}", ticket, now - timedelta(days=2))
    return True

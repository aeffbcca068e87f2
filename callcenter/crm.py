"""The IVR's view of the CRM in PostgreSQL (ivr/services.Crm): who a number or an account belongs
to, PIN checks with phone-access locking, the self-service lookups and new tickets.

PINs are stored as argon2id hashes (argon2-cffi's PasswordHasher, its RFC 9106 low-memory
profile): a well-kept KDF, verified in a thread so the event loop never waits for it. After
``LOCK_AFTER`` wrong PINs in a row the account's phone access is locked for ``LOCK_FOR``; a right
PIN resets the count. Every database error or time-out becomes LookupFailed: the flow says so to the
caller and offers an agent.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ivr.services import CustomerRef, LookupFailed, PinCheck

LOCK_AFTER = 6  # wrong PINs in a row (two calls' worth of three tries) lock phone access ...
LOCK_FOR = timedelta(minutes=30)  # ... for this long
ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_hasher = PasswordHasher()


def hash_pin(pin: str) -> str:
    return _hasher.hash(pin)


def _verify(stored: str | None, pin: str) -> bool:
    if not stored:
        return False
    try:
        return _hasher.verify(stored, pin)
    except (VerificationError, InvalidHashError):
        return False


_CUSTOMER = "c.id, c.display_name, coalesce(c.first_name, c.display_name) AS first_name, c.value_tier, c.language"


def _ref(row: asyncpg.Record) -> CustomerRef:
    return CustomerRef(id=row["id"], display_name=row["display_name"], first_name=row["first_name"],
                       value_tier=row["value_tier"], language=row["language"])


class PostgresCrm:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self.pool.fetch(sql, *args)
        except ERRORS as exc:
            raise LookupFailed(str(exc) or type(exc).__name__) from None

    async def customers_by_phone(self, e164: str) -> list[CustomerRef]:
        rows = await self._fetch(
            f"SELECT DISTINCT {_CUSTOMER} FROM customer_phones p JOIN customers c ON c.id = p.customer_id "
            "WHERE p.e164 = $1 AND c.status <> 'blocked' LIMIT 5", e164)
        return [_ref(r) for r in rows]

    async def account_exists(self, number: str) -> bool:
        return bool(await self._fetch("SELECT 1 FROM accounts WHERE number = $1 AND status <> 'closed'", number))

    async def check_pin(self, account: str, pin: str) -> PinCheck:
        rows = await self._fetch(
            f"SELECT a.id AS account_id, a.pin_hash, a.phone_locked_until > now() AS locked, {_CUSTOMER} "
            "FROM accounts a JOIN customers c ON c.id = a.customer_id "
            "WHERE a.number = $1 AND a.status <> 'closed' AND c.status <> 'blocked'", account)
        if not rows:
            return PinCheck(reason="unknown_account")
        row = rows[0]
        if row["locked"]:
            return PinCheck(reason="locked")
        right = await asyncio.to_thread(_verify, row["pin_hash"], pin)
        try:
            if right:
                await self.pool.execute("UPDATE accounts SET pin_failures = 0 WHERE id = $1", row["account_id"])
                return PinCheck(customer=_ref(row))
            # The failure that locks starts the count afresh for when the lock ends.
            locked = await self.pool.fetchval(
                "UPDATE accounts SET pin_failures = CASE WHEN pin_failures + 1 >= $2 THEN 0 ELSE pin_failures + 1 END,"
                " phone_locked_until = CASE WHEN pin_failures + 1 >= $2 THEN now() + $3::interval "
                "ELSE phone_locked_until END WHERE id = $1 "
                "RETURNING CASE WHEN pin_failures = 0 THEN extract(epoch FROM phone_locked_until) END",
                row["account_id"], LOCK_AFTER, LOCK_FOR)
        except ERRORS as exc:
            raise LookupFailed(str(exc)) from None
        return PinCheck(reason="wrong_pin", locked_until=float(locked) if locked is not None else None)

    async def lookup(self, query: str, customer_id: int) -> dict[str, Any] | None:
        sql = _LOOKUPS[query]
        rows = await self._fetch(sql, customer_id)
        if not rows:
            return None
        return {k: _plain(v) for k, v in rows[0].items()}

    async def create_ticket(self, customer_id: int, kind: str, subject: str, priority: str,
                            interaction: str) -> str:
        """The ticket's interaction is named by its TICKET event: the record may not be written yet."""
        try:
            return str(await self.pool.fetchval(
                "INSERT INTO tickets (customer_id, number, kind, status, priority, subject, description, "
                "interaction_id, opened_at, updated_at) SELECT $1, 'T' || nextval('ticket_numbers'), $2, 'open', $3, "
                "$4, 'Reported by phone (IVR)', NULL, now(), now() RETURNING number",
                customer_id, kind, priority, subject))
        except ERRORS as exc:
            raise LookupFailed(str(exc)) from None


def _plain(v: Any) -> Any:
    """Values a flow can say or compare: numbers as text keep their cents; times as ISO text."""
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if v is not None and not isinstance(v, str | int | float | bool):
        return str(v)
    return v


_LOOKUPS = {
    # the customer's main account: the one with the most activity is the one they mean
    "balance": "SELECT number, balance, currency, points, kind FROM accounts WHERE customer_id = $1 "
               "AND status <> 'closed' ORDER BY kind = 'loyalty', opened_at LIMIT 1",
    "last_order": "SELECT number, status, total, currency, items, placed_at::date AS placed, "
                  "updated_at::date AS updated, tracking FROM orders WHERE customer_id = $1 "
                  "ORDER BY placed_at DESC LIMIT 1",
    "open_ticket": "SELECT number, regexp_replace(number, '[^0-9]', '', 'g') AS digits, status, kind, subject, "
                   "opened_at::date AS opened FROM tickets "
                   "WHERE customer_id = $1 AND status IN ('open', 'pending') ORDER BY opened_at DESC LIMIT 1",
    "customer": "SELECT display_name AS name, value_tier AS tier, status, language FROM customers WHERE id = $1",
}

"""Who is calling: the caller's number (E.164) finds the customer; when several customers or none
share it (or the node requires a PIN), the caller keys an account number and its PIN. The CRM
checks the PIN against its stored hash and counts wrong ones: ``attempts`` wrong answers end the
try (IDENTIFY_FAILED each time), and the CRM locks the account's phone access after repeated
failures. The customer found, and how (caller_id, account_pin), go with the call: IDENTIFY on the
record, ``customer.*`` in the flow's context, and attached data for the agent's screen and the ACD.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bus import events as ev
from ivr import flow_model as fm
from ivr.services import CustomerRef, LookupFailed, PinCheck

if TYPE_CHECKING:
    from ivr.engine import FlowRun

log = logging.getLogger("ivr.identify")

PHONE_LOOKUP_TIMEOUT = 1.0
PIN_CHECK_TIMEOUT = 3.0  # the KDF takes ~50 ms of CPU; a busy database adds to it


async def identify(run: FlowRun, n: fm.Identify) -> bool:
    """True once the customer is known (already, by number, or by account and PIN)."""
    if run.ctx.get("customer.id") is not None and not n.require_pin:
        return True
    number = run.ctx.get("call.caller_e164")
    if number and not n.require_pin:
        try:
            found = await asyncio.wait_for(run.svc.crm.customers_by_phone(str(number)), PHONE_LOOKUP_TIMEOUT)
        except (LookupFailed, TimeoutError) as exc:
            log.warning("caller lookup failed: %s", exc or "timeout")
            found = []
        if len(found) == 1:
            _identified(run, found[0], "caller_id")
            return True
    return await _by_account(run, n)


async def _by_account(run: FlowRun, n: fm.Identify) -> bool:
    s = run.script
    for attempt in range(1, n.attempts + 1):
        account = await s.ask(n.account_prompt, n.account_length, n.timeout)
        if not account.digits:
            _failed(run, "no_input", attempt)
            if attempt < n.attempts and n.no_input_prompt:
                await s.play(n.no_input_prompt, interrupt=True)
            continue
        pin = await s.ask(n.pin_prompt, n.pin_length, n.timeout, masked=True)
        if not pin.digits:
            _failed(run, "no_input", attempt, account.digits)
            if attempt < n.attempts and n.no_input_prompt:
                await s.play(n.no_input_prompt, interrupt=True)
            continue
        try:
            check = await asyncio.wait_for(run.svc.crm.check_pin(account.digits, pin.digits), PIN_CHECK_TIMEOUT)
        except (LookupFailed, TimeoutError) as exc:
            log.warning("PIN check failed: %s", exc or "timeout")
            _failed(run, "unavailable", attempt, account.digits)
            return False
        if check.customer is not None:
            _identified(run, check.customer, "account_pin", account.digits)
            return True
        _failed(run, check.reason, attempt, account.digits, check)
        if check.reason == "locked" or check.locked_until is not None:
            await s.play(n.locked_prompt)
            return False
        if attempt < n.attempts:
            await s.play(n.unknown_account_prompt if check.reason == "unknown_account" else n.wrong_pin_prompt,
                         interrupt=True)
    return False


def _identified(run: FlowRun, customer: CustomerRef, how: str, account: str = "") -> None:
    run.ctx.set("customer", customer.as_vars())
    if account:
        run.ctx.set("customer.account", account)
    run.emit(ev.CustomerIdentified(interaction=run.interaction, customer_id=customer.id, how=how))
    run.script.attach({"customer_id": str(customer.id), "identified_by": how, "tier": customer.value_tier})


def _failed(run: FlowRun, reason: str, attempt: int, account: str = "", check: PinCheck | None = None) -> None:
    run.emit(ev.IdentifyFailed(interaction=run.interaction, reason=reason, attempts=attempt, account=account,
                               locked_until=check.locked_until if check else None))

"""What the IVR needs from the node that runs it, as protocols: the CRM (callcenter/crm.py, on
PostgreSQL), the queues (callcenter/calls.py over acd/), prompts and speech. Flows are unit-tested
with fakes of these; production passes the real ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bus import events as ev
from media.client import CallHandle


class LookupFailed(Exception):
    """The CRM could not answer (database down, too slow)."""


@dataclass(frozen=True)
class CustomerRef:
    id: int
    display_name: str
    first_name: str
    value_tier: str
    language: str = "en"

    def as_vars(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.display_name, "first_name": self.first_name, "tier": self.value_tier,
                "language": self.language}


@dataclass(frozen=True)
class PinCheck:
    """The result of an account number and PIN: ``customer`` when right; ``reason`` otherwise:
    unknown_account, wrong_pin, locked. ``locked_until``: this failure locked the account."""

    customer: CustomerRef | None = None
    reason: str = ""
    locked_until: float | None = None


class Crm(Protocol):
    async def customers_by_phone(self, e164: str) -> list[CustomerRef]: ...

    async def account_exists(self, number: str) -> bool: ...

    async def check_pin(self, account: str, pin: str) -> PinCheck: ...

    async def lookup(self, query: str, customer_id: int) -> dict[str, Any] | None: ...

    async def create_ticket(self, customer_id: int, kind: str, subject: str, priority: str,
                            interaction: str) -> str: ...


class Prompts(Protocol):
    def path(self, name: str) -> str: ...

    def spoken(self, text: str) -> str: ...

    def joined(self, names: list[str]) -> str: ...


@dataclass(frozen=True)
class Queued:
    """How a call's time with the ACD ended: ``outcome`` of acd.queue_call.QueueResult; ``survey``: the
    flow the queue sends the caller to after the agent hung up (the caller is still on the line)."""

    outcome: str
    agent_id: int | None = None
    queue: str = ""
    survey: str = ""


class Queues(Protocol):
    async def enqueue(self, call: CallHandle, queue: str, priority: int, skills: dict[str, int],
                      intent: str) -> Queued: ...

    async def callback(self, call: CallHandle, queue: str, prompt: str) -> bool: ...

    async def voicemail(self, call: CallHandle, queue: str, prompt: str, seconds: float) -> None: ...

    async def agents_available(self, queue: str) -> int: ...

    async def expected_wait(self, queue: str) -> float | None: ...


@dataclass
class IvrServices:
    crm: Crm
    queues: Queues
    prompts: Prompts
    emit: Callable[[ev.Event], None]
    dial_uri: Callable[[str], str | None]  # an outside number -> the SIP URI to call it at (None: not allowed)
    speech: bool = False  # a speech service runs: menus with phrases listen too

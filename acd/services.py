"""What a queue's flows need from the node that runs them: the ACD's stores, prompts, and how to
reach agents and outside parties."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acd.agent_store import AgentStore
from acd.directory import Directory
from acd.distributor import Distributor
from acd.offers import OfferBus
from acd.waiting import Waiting
from ivr.services import Prompts
from media.client import CallHandle

if TYPE_CHECKING:
    from acd.conversation import Record


@dataclass
class QueueServices:
    distributor: Distributor
    agents: AgentStore
    waiting: Waiting
    directory: Directory
    offers: OfferBus
    prompts: Prompts
    device_uri: Callable[[int], Awaitable[str | None]]  # where to ring an agent, None if nowhere
    node: str = "node"
    # For callbacks, which run without an inbound call: place a call from a worker with room
    # (uri, ring timeout, caller id), and the record of an interaction by its id.
    originate: Callable[[str, float, str], Awaitable[CallHandle]] | None = None
    record_for: Callable[[str], Record] | None = None
    # Where to call an extension or an outside number (kind, target), None if it cannot be reached.
    dial_uri: Callable[[str, str], str | None] = lambda kind, target: None

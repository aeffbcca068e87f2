"""The IVR's way to the ACD (ivr/services.Queues) on this node: queue a caller, request a callback,
take a message, and the queue state a flow's conditions ask about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from acd.conversation import Record, aht
from acd.ewt import ewt
from acd.overflow import queue_flow, voicemail
from acd.queue_call import request_callback
from acd.services import QueueServices
from ivr.services import Queued
from media.client import CallHandle


class AcdQueues:
    def __init__(self, svc: QueueServices, record: Record, interaction: str, caller_id: str, callback_uri: str,
                 voicemail_dir: Path, can_survey: Callable[[str], bool]):
        self.svc = svc
        self.record = record
        self.interaction = interaction
        self.caller_id = caller_id
        self.callback_uri = callback_uri
        self.voicemail_dir = voicemail_dir
        self.can_survey = can_survey  # the survey flow a queue names exists in the caller's flow set

    async def enqueue(self, call: CallHandle, queue: str, priority: int, skills: dict[str, int],
                      intent: str) -> Queued:
        """``intent`` is attached to the call by the flow (the agent's screen shows it); routing goes by
        ``skills``."""
        settings = await self.svc.directory.settings(queue)
        survey = settings.survey if settings is not None and self.can_survey(settings.survey) else ""
        result = await queue_flow(call, self.svc, queue, self.record, priority=priority, skills=skills,
                                  caller_id=self.caller_id, callback_uri=self.callback_uri,
                                  interaction=self.interaction, voicemail_dir=self.voicemail_dir,
                                  keep_caller=bool(survey))
        return Queued(result.outcome, result.agent_id, queue, survey if result.outcome == "connected" else "")

    async def callback(self, call: CallHandle, queue: str, prompt: str) -> bool:
        return await request_callback(call, self.svc, queue, self.record, callback_uri=self.callback_uri,
                                      interaction=self.interaction, prompt=prompt)

    async def voicemail(self, call: CallHandle, queue: str, prompt: str, seconds: float) -> None:
        await voicemail(call, self.svc, self.record, queue, self.voicemail_dir, seconds, prompt)
        await call.hangup()

    async def agents_available(self, queue: str) -> int:
        return (await self.svc.directory.staffing(queue)).idle

    async def expected_wait(self, queue: str) -> float | None:
        """What the next caller of ``queue`` would wait (acd/ewt.py, docs/metrics.md)."""
        staff = await self.svc.directory.staffing(queue)
        position = await self.svc.waiting.size(queue) + 1
        return ewt(position, await aht(self.svc.waiting.redis, queue), staff.staffed, staff.idle)

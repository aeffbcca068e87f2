"""Where a caller goes when a queue lets them go (timeout, no agents, full, exit key): the queue's
overflow — another queue, voicemail, a callback request, or a goodbye — each logged (OVERFLOW)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from acd.queue_call import QueueResult, Record, run_queue, script
from acd.services import QueueServices
from bus import events as ev
from media.client import CallEnded, CallHandle

MAX_HOPS = 3  # queue -> queue overflow chain, so that two queues overflowing into each other end
MAX_TRANSFERS = 20  # transfers of one call to a queue (two agents passing a caller back and forth end)


async def queue_flow(call: CallHandle, svc: QueueServices, queue: str, record: Record, *, priority: int = 0,
                     skills: dict[str, int] | None = None, caller_id: str = "", callback_uri: str = "",
                     interaction: str = "", voicemail_dir: Path,
                     voicemail_seconds: float = 60.0, goodbye_prompt: str = "unavailable",
                     voicemail_prompt: str = "leave_message", keep_caller: bool = False) -> QueueResult:
    """The caller's whole time with the ACD: queues, transfers between them, overflows. ``keep_caller``:
    an agent who hangs up first leaves the caller on the line, for the survey that follows."""
    visited = [queue]
    transfers = 0
    while True:
        result = await run_queue(call, svc, queue, record, priority=priority, skills=skills, caller_id=caller_id,
                                 callback_uri=callback_uri, interaction=interaction, keep_caller=keep_caller)
        if result.outcome == "transferred" and transfers < MAX_TRANSFERS:
            queue, visited, transfers = result.transfer_to, [result.transfer_to], transfers + 1
            continue  # the same interaction and priority, in the next queue
        ov = result.overflow
        if result.outcome != "exited" or ov is None:
            return result
        record.emit(ev.Overflow(interaction=record.interaction, queue=queue, kind=ov.kind, target=ov.target,
                                cause=result.cause))
        if ov.kind == "queue" and ov.target not in visited and len(visited) <= MAX_HOPS:
            queue = ov.target
            visited.append(queue)
            continue
        with contextlib.suppress(CallEnded):
            if ov.kind == "voicemail":
                await voicemail(call, svc, record, queue, voicemail_dir, voicemail_seconds, voicemail_prompt)
            else:
                await script(call, svc, record).play(goodbye_prompt)
            await call.hangup()
        return result


async def voicemail(call: CallHandle, svc: QueueServices, record: Record, queue: str, folder: Path,
                    seconds: float, prompt: str) -> None:
    """The caller leaves a message: recorded until # , hang-up, or ``seconds``."""
    await script(call, svc, record).play(prompt)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{call.call_id}.wav"
    started = time.time()
    await call.start_capture(str(path))
    with contextlib.suppress(TimeoutError, CallEnded):  # hanging up ends a message too
        await asyncio.wait_for(call.next_digit("#"), seconds)
    record.emit(ev.Voicemail(interaction=record.interaction, queue=queue, path=str(path),
                             seconds=round(time.time() - started, 1)))
    with contextlib.suppress(CallEnded):
        await call.stop_capture()

"""The dial plan's call flows. They drive calls only through media.client.CallHandle (no pjsua2)."""

from __future__ import annotations

from collections.abc import Callable

from media.client import CallHandle, OriginateFailed, first_ended

PromptPath = Callable[[str], str]


async def greeting(call: CallHandle, prompt: PromptPath, *, prompt_name: str, collect_digits: int = 0,
                   digit_timeout: float = 5.0, then_prompt: str | None = None) -> str:
    """Answer, play the greeting (a key cuts it short), collect digits, play ``then_prompt``, hang up.
    Returns the digits collected."""
    digits = ""
    await call.play(prompt(prompt_name), interrupt_digits="0123456789*#" if collect_digits else "", answer=True)
    if collect_digits:
        got = await call.collect(collect_digits, first_timeout=digit_timeout, inter_timeout=digit_timeout)
        digits = got.digits
    if then_prompt:
        await call.play(prompt(then_prompt), interrupt_digits="")
    await call.hangup()
    return digits


async def bridge(call: CallHandle, prompt: PromptPath, *, prompt_name: str, target: str,
                 ring_timeout: float, fallback_prompt: str | None = None) -> bool:
    """Answer, announce, call ``target`` from the caller's worker and bridge. Returns True if bridged."""
    await call.start_play(prompt(prompt_name), loop=False, answer=True)
    try:
        leg = await call.originate(target, timeout=ring_timeout)
    except OriginateFailed:
        if fallback_prompt:
            await call.play(prompt(fallback_prompt), interrupt_digits="")
        await call.hangup()
        return False
    if call.ended.is_set():
        await leg.hangup()
        return False
    await call.bridge(leg)
    await first_ended(call, leg)  # whoever hangs up first ends the call for both
    await leg.hangup()
    await call.hangup()
    return True


async def loop_prompt(call: CallHandle, prompt: PromptPath, *, prompt_name: str) -> None:
    """Answer and play a prompt in a loop until the caller hangs up (capacity tests)."""
    await call.start_play(prompt(prompt_name), loop=True, answer=True)
    await call.wait_ended()

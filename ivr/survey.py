"""The post-call survey (a ``survey`` node): each question by key (10 is two keys, or # after one)
or by voice (its phrases); every answer is a SURVEY event as soon as it is given, so a caller who
hangs up midway keeps the answers given (the record's survey_answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bus import events as ev
from ivr import flow_model as fm
from ivr.speech_match import grammar, match

if TYPE_CHECKING:
    from ivr.engine import FlowRun


async def survey(run: FlowRun, n: fm.Survey) -> None:
    about = run.ctx.get("survey") or {}
    customer = run.ctx.get("customer.id")
    for q in n.questions:
        for attempt in range(1, n.retries + 2):
            value, given, how = await _answer(run, n, q)
            if value is not None and q.min <= value <= q.max:
                run.emit(ev.SurveyAnswer(interaction=run.interaction, survey=n.name, question=q.name,
                                         answer=value, how=how, queue=str(about.get("queue", "")),
                                         agent_id=about.get("agent_id"),
                                         customer_id=int(customer) if customer is not None else None))
                break
            if given:
                run.here(ev.IvrNoMatch, attempt=attempt, kind=how, value=given)
            else:
                run.here(ev.IvrNoInput, attempt=attempt)
            if attempt <= n.retries and n.invalid_prompt:
                await run.script.play(n.invalid_prompt, interrupt=True)
    if n.thanks_prompt:
        await run.script.play(n.thanks_prompt)


async def _answer(run: FlowRun, n: fm.Survey, q: fm.Question) -> tuple[int | None, str, str]:
    """One answer to a question, by key (10 is two keys, or # after one) or by voice (its phrases):
    the score, what was given, and how."""
    width = len(str(q.max))
    if q.phrases and run.svc.speech:
        reply = await run.script.ask_or_listen(q.prompt, grammar(list(q.phrases)), n.timeout, max_digits=width,
                                               terminator="#")
        if reply.kind == "speech":
            heard = match(reply.words, list(q.phrases))
            return (q.phrases[heard.phrase] if heard.phrase else None), heard.text, "speech"
        digits = reply.key
    else:
        digits = (await run.script.ask(q.prompt, width, n.timeout, inter_timeout=2.0, terminator="#")).digits
    return (int(digits) if digits.isdigit() else None), digits, "key"

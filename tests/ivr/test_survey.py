"""The survey node (ivr/survey.py): answers by key and by voice, each kept as it is given, and a
survey after the agent is not a second way out of the IVR."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus import events as ev
from ivr.services import Queued
from tests.ivr.fakes import Harness


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "ivr")


async def test_survey_after_the_agent(h: Harness) -> None:
    h.write("main", """
flow: main
start: q
nodes:
  q: {type: queue, queue: support}
""")
    h.write("survey", """
flow: survey
start: s
nodes:
  s:
    type: survey
    name: after_call
    timeout: 0.05
    questions:
      - {name: csat, prompt: csat, min: 1, max: 5}
      - {name: nps, prompt: nps, min: 0, max: 10}
""")
    h.queues.result = Queued("connected", agent_id=7, queue="support", survey="survey")
    h.media.answers = [("csat", "7"), ("csat", "4"), ("nps", "10")]
    exit_ = await h.call("main")
    answers = [(a.question, a.answer, a.queue, a.agent_id) for a in h.of(ev.SurveyAnswer)]
    assert answers == [("csat", 4, "support", 7), ("nps", 10, "support", 7)]
    assert h.media.heard == ["csat", "invalid_entry", "csat", "nps", "survey_thanks"]
    assert [e.reason for e in h.of(ev.IvrExit)] == ["agent"]  # the survey is not a second way out
    assert exit_.reason == "agent"


async def test_survey_keeps_answers_given_before_a_hang_up(h: Harness) -> None:
    h.write("main", """
flow: main
start: s
nodes:
  s:
    type: survey
    name: after_call
    questions:
      - {name: csat, prompt: csat, min: 1, max: 5}
      - {name: nps, prompt: nps, min: 0, max: 10}
""")
    h.media.answers = [("csat", "5")]
    h.media.hang_up_at = "nps"
    exit_ = await h.call("main")
    assert [(a.question, a.answer) for a in h.of(ev.SurveyAnswer)] == [("csat", 5)]
    assert exit_.reason == "abandoned"


async def test_a_survey_question_answered_by_voice(h: Harness) -> None:
    h.write("main", """
flow: main
start: s
nodes:
  s:
    type: survey
    name: after_call
    questions:
      - {name: csat, prompt: csat, min: 1, max: 5, phrases: {네: 5, 아니요: 1}}
""")
    h.media.says = [("csat", [["네", 0.99]])]
    await h.call("main")
    assert [(a.question, a.answer, a.how) for a in h.of(ev.SurveyAnswer)] == [("csat", 5, "speech")]

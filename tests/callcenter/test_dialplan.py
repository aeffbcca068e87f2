from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.config import ConfigError
from callcenter.dialplan import BridgeRoute, GreetingRoute, load_dialplan
from callcenter.prompts import load_prompts
from tests.conftest import ROOT


def test_shipped_dialplan_matches_numbers() -> None:
    prompts = load_prompts(ROOT / "sip_config" / "prompts.toml", ROOT / "var" / "prompts")
    plan = load_dialplan(ROOT / "sip_config" / "dialplan.toml", set(prompts.texts))
    assert isinstance(plan.match("100"), GreetingRoute)
    assert isinstance(plan.match("200"), BridgeRoute)
    fallback = plan.match("12345")
    assert fallback is not None and fallback.number == "*"


@pytest.mark.parametrize(("text", "problem"), [
    ('[[route]]\nnumber = "1"\nname = "a"\naction = "dance"\nprompt = "p"\n', "action"),
    ('[[route]]\nnumber = "1"\nname = "a"\naction = "bridge"\nprompt = "p"\ntarget = "http://x"\n', "SIP URI"),
    ('[[route]]\nnumber = "1"\nname = "a"\naction = "greeting"\nprompt = "p"\n'
     '[[route]]\nnumber = "1"\nname = "b"\naction = "greeting"\nprompt = "p"\n', "two routes"),
    ('[[route]]\nnumber = "1"\nname = "a"\naction = "greeting"\nprompt = "p"\ncolour = 1\n', "colour"),
])
def test_bad_dialplans_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "d.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_dialplan(f)


def test_unknown_prompt_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text('[[route]]\nnumber = "1"\nname = "a"\naction = "greeting"\nprompt = "nope"\n')
    with pytest.raises(ConfigError, match="nope"):
        load_dialplan(f, {"welcome"})

"""Loading flows (ivr/flow_load.py): each kind of mistake in a flow file is refused with the file,
the line, the node and the problem; the shipped demo flows load."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ivr.flow_load import FlowError, load_flows
from tests.conftest import ROOT
from tests.ivr.fakes import PROMPTS

GOOD = """flow: main
start: menu
nodes:
  menu:
    type: menu
    prompt: main_menu
    choices:
      - {key: 1, goto: done}
  done: {type: hangup, prompt: goodbye}
"""


def _problems(tmp_path: Path, files: dict[str, str], calendars: str | None = None) -> list[str]:
    folder = tmp_path / "ivr"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    cal = None
    if calendars is not None:
        cal = tmp_path / "calendars.yaml"
        cal.write_text(calendars)
    with pytest.raises(FlowError) as info:
        load_flows(folder, PROMPTS, cal)
    return [str(p).replace(str(folder) + "/", "") for p in info.value.problems]


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace("type: hangup", "type: hangpu"), "main.yaml:9: node 'done': unknown node type 'hangpu'"),
    (GOOD.replace("prompt: goodbye}", "prompt: goodbye, colour: red}"),
     "main.yaml:9: node 'done': colour: unknown field"),
    (GOOD.replace("goto: done", "goto: dnoe"),
     "main.yaml:4: node 'menu': choice 1 goes to 'dnoe', which does not exist"),
    (GOOD.replace("prompt: main_menu", "prompt: main_menuu"),
     "main.yaml:4: node 'menu': prompt 'main_menuu' is not in the prompts file"),
    (GOOD.replace("      - {key: 1, goto: done}", "      - {key: 1, goto: done}\n      - {key: 1, goto: menu}"),
     "main.yaml:7: node 'menu': choices: key '1' is used by two choices"),
    (GOOD.replace("{key: 1,", "{key: 12,"), "main.yaml:8: node 'menu': choices.0.key: String should match pattern"),
    (GOOD + "  lost: {type: play, prompt: thanks}\n", "main.yaml:10: node 'lost': nothing leads to this node"),
    (GOOD.replace("start: menu", "start: nowhere"), "main.yaml:2: start node 'nowhere' does not exist"),
    (GOOD.replace("flow: main", "flow: other"), "main.yaml:1: flow 'other' is in a file named 'main.yaml'"),
    ("flow: main\nstart: a\nnodes:\n  a: {type: play, prompt: thanks, next: b}\n"
     "  b: {type: set, values: {x: 1}, next: a}\n",
     "main.yaml:4: node 'a': loop without input or exit: a -> b -> a"),
    ("flow: main\nstart: a\nnodes: [1, 2\n", "main.yaml:4: not valid YAML"),
    ("flow: main\nstart: a\nnodes:\n  a: {type: lookup, query: balance, found: a, empty: a}\n",
     "main.yaml:4: node 'a': failed: Field required"),
    ("flow: main\nstart: a\nnodes:\n  a: {type: condition, branches: [{when: {open: shop}, goto: a}], else: b}\n"
     "  b: {type: hangup}\n", "main.yaml:4: node 'a': calendar 'shop' is not in calendars.yaml"),
    ("flow: main\nstart: a\nnodes:\n  a: {type: condition, branches: [{when: {var: x, gt: 1, lt: 3}, goto: b}]}\n"
     "  b: {type: hangup}\n", "main.yaml:4: node 'a': branches.0.when: var needs exactly one of"),
    ("flow: main\nstart: a\nnodes:\n  a: {type: collect, prompt: enter_pin, var: pin, min_length: 6, "
     "max_length: 4}\n", "main.yaml:4: node 'a': min_length is larger than max_length"),
    ("flow: main\nstart: a\ntimezone: Mars/Olympus\nnodes:\n  a: {type: hangup}\n",
     "main.yaml:3: timezone: unknown time zone 'Mars/Olympus'"),
])
def test_each_mistake_is_named_with_file_line_and_node(tmp_path: Path, text: str, expected: str) -> None:
    problems = _problems(tmp_path, {"main": text})
    assert any(p.startswith(expected) for p in problems), problems


def test_flows_that_name_other_flows(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {
        "main": "flow: main\nstart: a\nnodes:\n  a: {type: subflow, flow: common, next: b}\n"
                "  b: {type: goto, flow: gone}\n",
        "common": "flow: common\nstart: x\nnodes:\n  x: {type: play, prompt: thanks}\n",
    })
    assert problems == ["main.yaml:4: node 'a': flow 'common' has no return node to come back from",
                        "main.yaml:5: node 'b': flow 'gone' does not exist"]


def test_bad_calendars_are_refused(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"main": GOOD},
                         calendars="calendars:\n  shop:\n    timezone: UTC\n    hours: {mon-fry: '08:00-18:00'}\n")
    assert [p.rsplit("/", 1)[-1] for p in problems] == [
        "calendars.yaml:4: calendar 'shop': hours: bad day range 'mon-fry' (like mon-fri)"]


def test_the_shipped_flows_load_with_the_shipped_prompts() -> None:
    with open(ROOT / "sip_config" / "prompts.toml", "rb") as f:
        prompts = set(tomllib.load(f)["prompts"])
    flows = load_flows(ROOT / "sip_config" / "ivr", prompts, ROOT / "sip_config" / "calendars.yaml")
    assert {"main", "after_hours", "survey"} <= set(flows.flows)
    from ivr.say import fragments

    assert fragments() <= prompts  # every value the IVR can say has its fragments

"""The node's IVR flows (callcenter/flow_library.py) and check-config: a reload with a broken file
keeps the flows in use; the same files are the same version; check-config names each problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from callcenter.app import check
from callcenter.config import ConfigError, load_config
from callcenter.flow_library import FlowLibrary
from callcenter.prompts import load_prompts
from tests.conftest import ROOT


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "ivr"
    shutil.copytree(ROOT / "sip_config" / "ivr", folder)
    return folder


def _library(flows: Path) -> FlowLibrary:
    prompts = load_prompts(ROOT / "sip_config" / "prompts.toml", flows.parent / "prompts")
    return FlowLibrary(flows, ROOT / "sip_config" / "calendars.yaml", set(prompts.texts), lambda: {"main"})


def test_a_broken_reload_keeps_the_flows_in_use(flows: Path) -> None:
    library = _library(flows)
    before = library.current
    assert library.reload() == [] and library.current is before  # the same files: the same version
    main = flows / "main.yaml"
    main.write_text(main.read_text().replace("goto: balance", "goto: balanse"))
    problems = library.reload()
    assert problems and "main.yaml:" in problems[0] and "'balanse', which does not exist" in problems[0]
    assert library.current is before
    main.write_text(main.read_text().replace("goto: balanse", "goto: balance").replace("Demo hotline", "Hotline"))
    assert library.reload() == [] and library.current.version != before.version


def test_a_flow_the_dial_plan_needs_must_exist(flows: Path) -> None:
    (flows / "main.yaml").unlink()
    (flows / "after_hours.yaml").write_text((flows / "after_hours.yaml").read_text())
    with pytest.raises(ConfigError, match="routes to flows that do not exist"):
        _library(flows)


async def test_check_config_checks_the_flows(flows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = flows / "main.yaml"
    main.write_text(main.read_text().replace("type: say", "type: sya", 1))
    monkeypatch.setenv("CC_PATHS__IVR", str(flows))
    monkeypatch.setenv("CC_SIP__FRONT_DOOR", "none")
    problems = await check(load_config(None))
    assert any("main.yaml:" in p and "unknown node type 'sya'" in p for p in problems), problems

"""The key registry: one place names every Redis key, Python and Lua alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from acd import distributor, idle_index
from bus import keys

ROOT = Path(__file__).resolve().parents[2]


def test_lua_expansion_builds_the_same_key_as_python() -> None:
    assert keys.AGENT_KEY.lua("aid") == "'cc:acd:agent:' .. aid"
    assert keys.STRATEGY_KEY.lua() == "'cc:acd:strategy'"
    assert keys.lua("redis.call('ZADD', @IDLE_KEY(q), 1, @DEADLINES)") == (
        "redis.call('ZADD', 'cc:acd:idle:' .. q, 1, 'cc:acd:deadlines')")
    assert keys.IDLE_KEY.format(queue="q") == "cc:acd:idle:q"


def test_an_unknown_or_malformed_reference_fails_at_import_time() -> None:
    with pytest.raises(KeyError, match="@NOPE"):
        keys.lua("redis.call('GET', @NOPE(x))")
    with pytest.raises(ValueError):
        keys.AGENT_KEY.lua()  # a key with a part needs its Lua expression


def test_keys_are_distinct_and_documented() -> None:
    reg = keys.registry()
    prefixes = [k.split("{")[0] for k in reg.values()]
    assert len(set(prefixes)) == len(prefixes)
    assert all(k.kind in {"string", "hash", "set", "zset", "list", "stream", "channel"} and k.doc for k in reg.values())


def test_scripts_name_only_registry_keys() -> None:
    heads = {k.split("{")[0] for k in keys.registry().values()}
    for script in (idle_index.LUA_INDEX, idle_index.SET_MEMBERSHIPS, distributor._DECIDE):
        assert "@" not in script
        assert {m.group(1) for m in re.finditer(r"'(cc:[^']*)'", script)} <= heads


def test_no_module_spells_a_key_outside_the_registry() -> None:
    literal = re.compile(r"""["']cc:[a-z_]+:""")
    offenders = [str(p.relative_to(ROOT)) for pkg in ("acd", "bus", "callcenter", "ivr", "media", "agent_ui")
                 for p in (ROOT / pkg).rglob("*.py") if p.name != "keys.py" and literal.search(p.read_text())]
    assert offenders == []

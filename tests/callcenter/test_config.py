"""Configuration: a bad file is refused at start with the key and the problem named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callcenter.config import DEFAULT_CONFIG, ConfigError, load_config
from tests.conftest import ROOT


def test_default_config_loads() -> None:
    cfg = load_config(DEFAULT_CONFIG, env={})
    assert cfg.http.port == 8080 and cfg.sip.port == 5060 and cfg.media.outbound_reserve == 1


def test_environment_overrides(tmp_path: Path) -> None:
    cfg = load_config(DEFAULT_CONFIG, env={"CC_HTTP__PORT": "9090", "DATABASE_URL": "postgresql://x/y",
                                           "REDIS_URL": "redis://r:1/0", "CC_SIP__FRONT_DOOR": "none"})
    assert cfg.http.port == 9090 and cfg.sip.front_door == "none"
    assert cfg.database.url == "postgresql://x/y" and cfg.redis.url == "redis://r:1/0"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[http]\nport = "eighty"\n', "http.port", "valid integer"),
    ('[http]\nport = "8080"\n', "http.port", "valid integer"),
    ("[media]\nanswer_timeout = true\n", "media.answer_timeout", "valid number"),
    ("[http]\nport = 70000\n", "http.port", "less than or equal"),
    ("[media]\nworkers = -1\n", "media.workers", "greater than or equal"),
    ('[sip]\nfront_door = "maybe"\n', "sip.front_door", "'auto', 'kamailio' or 'none'"),
    ("[sip]\nportt = 5060\n", "sip.portt", "unknown key"),
    ("[telephony]\nx = 1\n", "telephony", "unknown key"),
    ("[media]\nheartbeat_ttl = 0.5\n", "heartbeat_ttl", "longer than"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert key in str(err.value) and problem in str(err.value)


def test_not_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[http\nport=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})


def test_run_refuses_a_bad_file_and_starts_nothing(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[http]\nport = "8080"\n[paths]\nvar_dir = "{tmp_path / "var"}"\n')
    for args in (["run"], ["check-config"]):
        r = subprocess.run([sys.executable, "-m", "callcenter.cli", "--config", str(f), *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "http.port" in r.stderr and "valid integer" in r.stderr
    assert not (tmp_path / "var").exists(), "something started before the configuration was checked"


def test_check_config_accepts_the_shipped_files() -> None:
    r = subprocess.run([sys.executable, "-m", "callcenter.cli", "check-config"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/usr/sbin:/bin", "HOME": "/tmp"})
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout

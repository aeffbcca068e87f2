"""The README's examples, run as written against a real platform behind the real front door (only
the port differs: the test platform listens on a free one)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Platform, Stores, require, start_platform


@pytest.fixture(scope="module")
def platform(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    require("kamailio")
    p = start_platform(stores, tmp_path_factory.mktemp("readme"), front_door="kamailio", workers=2, redis_db=12)
    p.wait(lambda: p.health()["workers"]["up"] == 2, what="workers up")
    yield p
    assert p.stop() == 0


def test_the_sipp_example_completes_through_the_front_door(platform: Platform, tmp_path: Path) -> None:
    """SIPp's built-in uac scenario ignores Record-Route and sends its BYE to the front door with no
    route: the front door finds the worker from the dialog and the call ends cleanly."""
    require("sipp")
    example = re.search(r"`(sipp -sn uac [^`]+)`", (ROOT / "README.md").read_text())
    assert example, "the README's SIPp example is gone"
    args = example.group(1).replace("127.0.0.1:5060", f"127.0.0.1:{platform.sip_port}").split()
    res = subprocess.run([*args, "-nostdin", "-timeout", "30s", "-timeout_error"], capture_output=True, text=True,
                         errors="replace", timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]
    log = (platform.var_dir / "kamailio" / "kamailio.log").read_text()
    assert "404" not in "".join(ln for ln in log.splitlines() if "BYE" in ln)


@pytest.fixture(scope="module")
def demo(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform as `make run` starts it: its own database, demo data, a development key."""
    p = start_platform(stores, tmp_path_factory.mktemp("readme-demo"), front_door="kamailio", workers=1,
                       redis_db=14, own_database=True, demo_customers=20)
    p.api_key = (p.var_dir / "dev-api-key").read_text().strip()
    yield p
    assert p.stop() == 0


def test_the_curl_example_makes_alice_available(demo: Platform) -> None:
    block = re.search(r"```sh\n(curl [^`]+?)```", (ROOT / "README.md").read_text())
    assert block, "the README's curl example is gone"
    port = demo.http.rsplit(":", 1)[1]
    command = block.group(1).replace("localhost:8080", f"localhost:{port}")
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                         cwd=demo.var_dir.parent)  # var/dev-api-key, as from the checkout after `make run`
    assert res.returncode == 0 and '"error"' not in res.stdout, (res.stdout, res.stderr)
    assert demo.get("/api/agents/alice")[1]["state"]["status"] == "available"  # type: ignore[index]
    phones = (demo.var_dir / "demo-phones.txt").read_text()
    assert all(ext in phones for ext in ("201", "202", "203", "204"))

"""Start pjsua2 test phones (tests/sip/phone.py) as processes and read their JSON report."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def phone(*args: str) -> subprocess.Popen[str]:
    """A test phone; with --commands its stdin takes dtmf/info/hangup lines (send with ``command``)."""
    p = subprocess.Popen([sys.executable, "-m", "tests.sip.phone", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.PIPE if "--commands" in args else None,
                         text=True, errors="replace")
    assert p.stdout is not None
    for line in p.stdout:  # pjsua logs to stdout too; our lines are JSON objects
        if line.startswith("{"):
            assert json.loads(line)["ready"]
            return p
    raise AssertionError("phone did not start: " + (p.stderr.read() if p.stderr else ""))


def command(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()


def result(p: subprocess.Popen[str]) -> dict:  # type: ignore[type-arg]
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, f"phone crashed ({p.returncode}): {err[-2000:]}"
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])  # type: ignore[no-any-return]

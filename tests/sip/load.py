"""Helpers to run SIPp load callers (tests/sip/scenarios/load_call.xml) and read their outcome."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import sipp


@dataclass
class LoadResult:
    answered: int
    refused: int
    failed: int
    proc: subprocess.CompletedProcess[str]


def outcome(workdir: Path, proc: subprocess.CompletedProcess[str], calls: int) -> LoadResult:
    text = "".join(p.read_text() for p in workdir.glob("load_call_*_logs.log"))
    answered, refused = text.count("ANSWERED "), text.count("REFUSED ")
    return LoadResult(answered, refused, calls - answered - refused, proc)


def load(target: str, workdir: Path, calls: int, hold_ms: int, rate: int = 50, service: str = "300",
         extra: list[str] | None = None) -> LoadResult:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = sipp("load_call.xml", target, calls=calls, rate=rate, limit=calls, service=service, cwd=workdir,
                extra=["-d", str(hold_ms), "-trace_logs", "-recv_timeout", "6000", *(extra or [])],
                timeout=hold_ms / 1000 + 60)
    return outcome(workdir, proc, calls)

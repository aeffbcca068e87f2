"""What every benchmark prints first: the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def machine() -> dict[str, str]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"cpu": model, "cores": str(os.cpu_count()), "memory_gib": str(mem), "python": sys.version.split()[0]}


class CpuMeter:
    """The machine's CPU between two readings of /proc/stat: busy % and, of it, steal % (ticks the
    hypervisor gave to other guests: a busy neighbour, not our work)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4], fields[7], sum(fields)

    def read(self) -> tuple[float, float]:
        """(busy %, steal %) since this meter started."""
        b1, s1, t1 = self._read()
        b0, s0, t0 = self._start
        ticks = max(1, t1 - t0)
        return round(100.0 * (b1 - b0) / ticks, 1), round(100.0 * (s1 - s0) / ticks, 1)

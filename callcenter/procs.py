"""Processes of the platform: children end with the control plane, even when it is killed outright;
and the few checks and stops done on processes by their PID."""

from __future__ import annotations

import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask Linux to send SIGTERM when the parent goes (workers then hang up cleanly)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc: a clean stop still stops the children


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie that is not our child waits for its parent,
    or init, to reap it: it is gone for every purpose here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: the signal said it exists


def stop_pid(pid: int, term_wait: float = 5.0, kill_wait: float = 2.0) -> None:
    """SIGTERM, and SIGKILL if it is still there after ``term_wait`` seconds (blocking: call it in a
    thread from the event loop)."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pid_alive(pid):
            return

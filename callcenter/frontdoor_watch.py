"""Ends the front door (Kamailio) a few seconds after the control plane is gone, and no sooner.

Kamailio must outlive a control plane that crashed: the media workers, told by the kernel that
their parent died, hang up their calls, and those BYEs pass through the front door. Then this
watcher ends every dialog Kamailio still knows (a BYE to each side: legs of workers that died
without a word), gives the BYEs a moment, and stops Kamailio, so nothing is left behind. A clean
stop ends Kamailio directly, and the watcher exits with it.

    python -m callcenter.frontdoor_watch --pid <kamailio pid> --ctl <control socket> --grace 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time

from callcenter.frontdoor import dialog_ids, kamcmd_path
from callcenter.procs import die_with_parent, pid_alive, stop_pid


def end_all_dialogs(ctl: str) -> int:
    """BYE both sides of every dialog Kamailio knows (``dlg.end_dlg``); returns how many."""
    exe = kamcmd_path()
    if exe is None:
        return 0
    try:
        listed = subprocess.run([exe, "-s", f"unix:{ctl}", "dlg.list"], capture_output=True, text=True, timeout=5)
        ids = dialog_ids(listed.stdout)
        if ids:
            subprocess.run([exe, "-s", f"unix:{ctl}"], input="".join(f"dlg.end_dlg {e} {i}\n" for e, i in ids),
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(ids)


def watch(pid: int, ctl: str, grace: float, parent: int) -> None:
    orphaned = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal orphaned
        orphaned = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the control plane, which stops us cleanly
    die_with_parent()  # SIGTERM when the control plane goes, however it goes
    while pid_alive(pid) and not orphaned and os.getppid() == parent:
        time.sleep(0.5)
    if not pid_alive(pid):
        return
    time.sleep(grace)  # the workers' own BYEs first
    if end_all_dialogs(ctl):
        time.sleep(grace)
    stop_pid(pid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="callcenter.frontdoor_watch")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--ctl", required=True, help="Kamailio's binrpc control socket")
    ap.add_argument("--grace", type=float, default=3.0)
    a = ap.parse_args(argv)
    watch(a.pid, a.ctl, a.grace, os.getppid())


if __name__ == "__main__":
    main()

"""The frame ports a listening call lends (media/speech_stream.PortPool) on a real pjsua2 endpoint.

The endpoint runs in a child process: the crash these tests guard against (a port destroyed while
the conference bridge still feeds it) kills the process with SIGSEGV, which pytest would not survive.
"""

from __future__ import annotations

import json
import subprocess
import sys

from callcenter.embedded import free_port
from tests.conftest import ROOT

CHILD = r"""
import asyncio, gc, json, sys
import pjsua2 as pj
from media.endpoint import EndpointConfig, create_endpoint
from media.speech_stream import REUSE_AFTER, PortPool

gc.disable()  # as in the worker: collected by hand on the loop thread
sip, rtp, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

async def main():
    ep, _ = create_endpoint(EndpointConfig("127.0.0.1", sip, rtp, 8, log_level=0))
    loop = asyncio.get_running_loop()
    pool = PortPool(loop)
    tone = pj.ToneGenerator()
    tone.createToneGenerator(8000, 1)
    d = pj.ToneDesc(); d.freq1 = 440; d.freq2 = 0; d.on_msec = 1000; d.off_msec = 0
    v = pj.ToneDescVector(); v.append(d); tone.play(v, True)
    heard = {}
    sizes, peak = set(), 0
    for n in range(rounds):
        def sink(pcm, n=n):
            nonlocal peak
            heard[n] = heard.get(n, 0) + 1
            sizes.add(len(pcm))
            peak = max(peak, max(memoryview(pcm).cast("h")))
        port = pool.lend(sink)
        tone.startTransmit(port)
        await asyncio.sleep(0.15)
        # the source still transmits when the port goes back (a call whose media is gone before
        # its disconnect is applied): the port must neither crash nor feed the next listener
        pool.give_back(port)
        gc.collect()
        await asyncio.sleep(REUSE_AFTER if n % 2 else 0)
        tone.stopTransmit(port)
    await asyncio.sleep(0.1)
    print(json.dumps({"made": len(pool.made), "heard": len(heard), "rounds": rounds,
                      "sizes": sorted(sizes), "peak": peak}), flush=True)
    pool.destroy()
    del tone, port, v, d
    gc.collect()
    await asyncio.sleep(REUSE_AFTER)
    ep.libDestroy()

asyncio.run(main())
"""


def test_ports_given_back_while_fed_are_reused_not_destroyed() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(free_port()), str(free_port()), "20"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heard"] == out["rounds"]  # every listener got audio while it held the port
    assert out["sizes"] == [1600] and out["peak"] > 1000  # in 100 ms batches, the tone itself
    # a port goes out again only after its rest: half the rounds give it back and lend at once
    assert 2 <= out["made"] <= 3

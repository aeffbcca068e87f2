"""media/frame_bytes: a MediaFrame's audio read from the vector's storage equals SWIG's slow copy."""

from __future__ import annotations

import os

import pjsua2 as pj

from media.frame_bytes import _storage, frame_bytes


def test_the_fast_path_is_taken_and_copies_exactly() -> None:
    assert frame_bytes is _storage  # the layout check passed on this build
    for pcm in (os.urandom(320), os.urandom(1), b"\x00" * 640):
        frame = pj.MediaFrame()
        frame.buf = pj.ByteVector(list(pcm))
        assert frame_bytes(frame.buf) == bytes(frame.buf) == pcm
    assert frame_bytes(pj.MediaFrame().buf) == b""

"""Issue 11.4: MAX_AUDIO_SECONDS bounds the audio one request transcribes, checked while decoding: a file
that declares a longer duration is refused before anything is decoded, one that does not say is refused
as soon as its decoded audio passes the limit, both with 413 and the limit in the message."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from openai import APIStatusError, OpenAI

from speaches.audio.encoding import AudioEncoder
from tests.hardening.observe import metric
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server

LIMIT_SECONDS = 60


def silent_flac(seconds: int, *, declares_length: bool) -> bytes:
    """Digital silence packs into almost nothing: ten minutes are about 100 kB. A streamed FLAC leaves
    the total length unset in its header ("unknown"), so only decoding tells how long it is."""
    rate = 8000
    minute = np.zeros(rate * 60, dtype=np.float32)
    out = bytearray()
    with AudioEncoder("flac", rate, rate, streamable=not declares_length) as encoder:
        for _ in range(seconds // 60):
            out += encoder.encode(minute)
        out += encoder.finish()
    return bytes(out)


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Server]:
    env = {"MAX_AUDIO_SECONDS": str(LIMIT_SECONDS), "STT_MODEL_TTL": "-1", "PRELOAD_MODELS": TINY_EN}
    with running_server(env) as server:
        yield server


def transcribed_seconds(server: Server) -> float:
    return metric(server, "speaches_audio_seconds_total", kind="transcription")


@pytest.mark.parametrize("declares_length", [True, False], ids=["declared", "unknown-length"])
def test_long_audio_is_refused_with_413_before_it_is_transcribed(limited_server: Server, declares_length: bool) -> None:
    server = limited_server
    audio = silent_flac(600, declares_length=declares_length)
    assert len(audio) < 200_000
    before = transcribed_seconds(server)
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(APIStatusError) as refused:
        client.audio.transcriptions.create(file=("silence.flac", audio), model=TINY_EN, response_format="srt")
    assert refused.value.status_code == 413
    error = refused.value.response.json()["error"]
    assert (error["code"], error["param"]) == ("audio_too_long", "file")
    assert f"{LIMIT_SECONDS} s" in error["message"]
    assert "MAX_AUDIO_SECONDS" in error["message"]
    if declares_length:
        assert "600 s" in error["message"]
    # Streamed answers are refused the same way, with the HTTP status, not inside a 200 stream.
    streamed = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        data={"model": TINY_EN, "stream": "true"},
        files={"file": ("silence.flac", audio, "audio/flac")},
        timeout=120,
    )
    assert streamed.status_code == 413, streamed.text
    assert transcribed_seconds(server) == before, "nothing may be transcribed"


def test_audio_within_the_limit_is_transcribed(limited_server: Server) -> None:
    client = OpenAI(base_url=f"{limited_server.url}/v1", api_key="x", max_retries=0, timeout=120)
    with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
        text = client.audio.transcriptions.create(file=audio, model=TINY_EN).text
    assert word_error_rate(JFK_TEXT, text) < 0.15

"""Model lifecycle around transcription, each on a server of its own: single-flight loading, TTL unload
and reload, a streaming client that goes away, and long audio transcribed in windows."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import re
import time
import wave

import httpx
import numpy as np
import pytest
from openai import OpenAI

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, JFK_TEXT, TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server

JFK = AUDIO_DIR / "jfk.flac"
# "loaded" alone would also match inside "unloaded".
LOADED = re.compile(rf"\bloaded stt model {re.escape(TINY_EN)}\b")
UNLOADED = re.compile(rf"\bunloaded stt model {re.escape(TINY_EN)}\b")


def sdk(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=300)


def transcribe_jfk(client: OpenAI) -> str:
    with JFK.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, model=TINY_EN).text


def logged(server: Server, pattern: re.Pattern[str]) -> int:
    return len(pattern.findall(server.logs()))


def wait_for_log(server: Server, pattern: re.Pattern[str], count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while logged(server, pattern) < count:
        assert time.monotonic() < deadline, f"{pattern.pattern!r} x{count} not logged in {timeout} s:\n{server.logs()}"
        time.sleep(0.2)


def test_concurrent_first_requests_load_the_model_once() -> None:
    with running_server({"STT_MODEL_TTL": "60"}) as server:
        client = sdk(server)
        with concurrent.futures.ThreadPoolExecutor(8) as workers:
            texts = list(workers.map(lambda _: transcribe_jfk(client), range(8)))
        assert all(word_error_rate(JFK_TEXT, text) <= 0.05 for text in texts)
        assert logged(server, LOADED) == 1, server.logs()


def test_idle_model_is_unloaded_after_its_ttl_and_loaded_again_on_use() -> None:
    with running_server({"STT_MODEL_TTL": "1"}) as server:
        client = sdk(server)
        assert word_error_rate(JFK_TEXT, transcribe_jfk(client)) <= 0.05
        wait_for_log(server, UNLOADED)
        assert logged(server, LOADED) == 1
        assert word_error_rate(JFK_TEXT, transcribe_jfk(client)) <= 0.05
        assert logged(server, LOADED) == 2, server.logs()
        wait_for_log(server, UNLOADED, count=2)


def test_requests_abandoned_by_their_clients_stop_decoding() -> None:
    # One inference slot, and a model unloaded as soon as it is idle: an abandoned request, streamed
    # or not, must free both without finishing the 60 s file, and the next request must be answered.
    long_request = {"model": TINY_EN, "vad_filter": "false", "language": "en"}
    with running_server({"STT_MODEL_TTL": "0", "INFERENCE_CONCURRENCY": "1"}) as server:
        with (
            (AUDIO_DIR / "multilingual.mp3").open("rb") as audio,
            httpx.stream(
                "POST",
                f"{server.url}/v1/audio/transcriptions",
                files={"file": audio},
                data={**long_request, "stream": "true"},
                timeout=120,
            ) as response,
        ):
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            assert "transcript.text.delta" in first
        # The client has gone; with one slot, this request runs only once the stream's work stopped.
        assert word_error_rate(JFK_TEXT, transcribe_jfk(sdk(server))) <= 0.05
        # Idle again, every load has been unloaded. (Whether the next request reused the model
        # depends on timing: the abandoned request keeps its lease until its step in flight ends.)
        wait_for_log(server, UNLOADED, count=logged(server, LOADED))

        with (AUDIO_DIR / "multilingual.mp3").open("rb") as audio, contextlib.suppress(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": audio}, data=long_request, timeout=1.5)
        assert word_error_rate(JFK_TEXT, transcribe_jfk(sdk(server))) <= 0.05
        wait_for_log(server, UNLOADED, count=logged(server, LOADED))

        logs = server.logs()
        assert logs.count("transcribed 11.0 s of audio") == 2, logs
        assert "transcribed 60.0 s of audio" not in logs, logs
        assert server.alive()


def _jfk_repeated_wav(times: int, gap_seconds: float) -> tuple[bytes, float]:
    jfk = decode_audio(JFK)
    gap = np.zeros(int(gap_seconds * 16_000), dtype=np.float32)
    samples = np.concatenate([part for _ in range(times) for part in (jfk, gap)])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((samples * 32767).astype(np.int16).tobytes())
    return buffer.getvalue(), len(samples) / 16_000


def test_long_audio_is_transcribed_in_windows_with_timestamps_of_the_whole_file() -> None:
    audio, seconds = _jfk_repeated_wav(6, gap_seconds=1.0)  # 72 s: two 40 s windows, cut in a pause
    reference = " ".join([JFK_TEXT] * 6)
    with running_server({"STT_MODEL_TTL": "-1", "WHISPER__WINDOW_SECONDS": "40"}) as server:
        client = sdk(server)
        # json: batched mode for both windows (each is over 30 s).
        text = client.audio.transcriptions.create(file=("long.wav", audio), model=TINY_EN)
        assert word_error_rate(reference, text.text) <= 0.1, text.text
        assert abs(text.usage.seconds - seconds) < 0.05
        # verbose_json shows segment timings: decoded sequentially, window by window.
        result = client.audio.transcriptions.create(
            file=("long.wav", audio),
            model=TINY_EN,
            response_format="verbose_json",
            timestamp_granularities=["segment", "word"],
        )
        logs = server.logs()
    assert f"transcribed {seconds:.1f} s of audio (2 window(s), 2 batched;" in logs, logs
    assert f"transcribed {seconds:.1f} s of audio (2 window(s), 0 batched;" in logs, logs

    assert abs(result.duration - seconds) < 0.05
    assert word_error_rate(reference, result.text) <= 0.1, result.text
    segments = result.segments
    assert [segment.start for segment in segments] == sorted(segment.start for segment in segments)
    assert all(0 <= segment.start < segment.end <= result.duration for segment in segments)
    assert all(segment.end - segment.start <= 30 for segment in segments)
    # The second window's timestamps are shifted to the whole file: speech runs up to its end.
    assert segments[-1].end > seconds - 5
    assert [segment.id for segment in segments] == list(range(len(segments)))
    words = result.words
    assert all(0 <= word.start <= word.end <= result.duration for word in words)
    assert [word.start for word in words] == sorted(word.start for word in words)
    # The repetitions lie 12 s apart, in both windows: each repetition's 12 s span must hold most of
    # its 22 words, so the second window's times were shifted to the whole file. (Which words Whisper
    # writes for a repeated clip varies, "And so" is sometimes dropped, so the check counts words.)
    for index in range(6):
        in_repetition = [word for word in words if 12 * index - 0.5 <= word.start < 12 * index + 11.5]
        assert len(in_repetition) >= 15, (index, [(word.word, word.start) for word in words])

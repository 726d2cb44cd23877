"""Live transcription over a real WebSocket (WS /v1/audio/transcriptions) against real servers and tiny.en."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import (
    AUDIO_DIR,
    BASE,
    FRENCH_TRANSLATION,
    JFK_TEXT,
    LAMP_TEXT,
    TINY_EN,
    Server,
    running_server,
    word_error_rate,
)
from tests.live.live_client import LiveResult, eventually, live_url, pcm_of, receive_all, send_paced, silence, stream

pytestmark = pytest.mark.server

JFK_TAIL_START = 3.0  # between "Americans" and "ask" in jfk.flac
JFK_TAIL_TEXT = "ask not what your country can do for you, ask what you can do for your country."
API_KEY = "live-test-key"
IDLE_TIMEOUT = 1.5
MAX_SESSION = 5.0


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return pcm_of(AUDIO_DIR / "jfk.flac")


@pytest.fixture(scope="module")
def lamp() -> bytes:
    return pcm_of(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")


@pytest.fixture(scope="module")
def strict_server() -> Iterator[Server]:
    """API key required, a short idle timeout, and one inference slot (so a leaked slot would block everyone)."""
    with running_server(
        {
            "API_KEY": API_KEY,
            "LIVE_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "LIVE_MAX_SESSION_SECONDS": str(MAX_SESSION),
            "INFERENCE_CONCURRENCY": "1",
            "STT_MODEL_TTL": "-1",
        }
    ) as running:
        yield running
        assert running.alive(), running.logs()


def url(server: Server, **query: str) -> str:
    return live_url(server.url, **{"model": TINY_EN, **query})


def assert_grows(result: LiveResult) -> None:
    """The deltas spell out the final transcript, and no delta resends what came before."""
    assert result.final_text == "".join(delta["delta"] for delta in result.deltas)
    assert all("text" not in delta for delta in result.deltas)


def assert_finished(result: LiveResult, reference: str, max_wer: float = 0.1) -> None:
    assert result.close_code == 1000, (result.close_code, result.close_reason, result.messages)
    assert not result.errors, result.errors
    assert result.final_text is not None, result.messages
    assert word_error_rate(reference, result.final_text) <= max_wer, result.final_text


async def test_real_time_stream(server: Server, jfk: bytes) -> None:
    started = time.monotonic()
    result = await stream(url(server), jfk, speed=1.0)
    assert_finished(result, JFK_TEXT)
    assert_grows(result)
    # The transcript arrives while the audio does, not only at the end: before the client sent its last frame.
    first_confirmed = next(at for msg, at in zip(result.messages, result.received_at, strict=True) if msg.get("delta"))
    assert first_confirmed < result.frame_sent_at[-1], (first_confirmed - started, result.frame_sent_at[-1] - started)
    assert any(delta["unconfirmed"] for delta in result.deltas)


async def test_four_times_real_time_verbose_json(server: Server, jfk: bytes) -> None:
    result = await stream(url(server, response_format="verbose_json"), jfk, speed=4.0)
    assert_finished(result, JFK_TEXT)
    assert_grows(result)
    words = [word for delta in result.deltas for word in delta["words"]]
    assert word_error_rate(JFK_TEXT, " ".join(word["word"] for word in words)) <= 0.1
    assert all(0.0 <= word["start"] <= word["end"] <= 11.1 for word in words), words
    assert all(delta["language"] == "en" for delta in result.deltas)
    # "country" is the last word, near the end of the 11 s clip.
    assert words[-1]["word"].strip(".").lower() == "country"
    assert words[-1]["end"] > 9.5


async def test_text_format_sends_the_new_text(server: Server, jfk: bytes) -> None:
    result = await stream(url(server, response_format="text"), jfk, speed=4.0)
    assert result.close_code == 1000
    assert all(isinstance(message, str) for message in result.messages), result.messages
    assert len(result.messages) >= 2
    assert word_error_rate(JFK_TEXT, "".join(result.messages)) <= 0.1


async def test_four_sessions_at_once_keep_their_own_audio(server: Server, jfk: bytes, lamp: bytes) -> None:
    jfk_tail = pcm_of(AUDIO_DIR / "jfk.flac", start_seconds=JFK_TAIL_START)
    delay = 1.5
    sessions = [
        (JFK_TEXT, jfk),
        (LAMP_TEXT, lamp),
        (JFK_TAIL_TEXT, jfk_tail),
        (JFK_TEXT, silence(delay) + jfk),  # told apart from the first session by its word times
    ]
    results = await asyncio.gather(
        *(stream(url(server, response_format="verbose_json"), pcm, speed=1.0) for _, pcm in sessions)
    )
    for (reference, _), result in zip(sessions, results, strict=True):
        assert_finished(result, reference)
        assert_grows(result)
    first_word_starts = [next(delta["words"][0]["start"] for delta in r.deltas if delta["words"]) for r in results]
    assert first_word_starts[0] < 0.5
    assert first_word_starts[3] >= delay - 0.2


async def test_odd_sized_frames_keep_samples_aligned(server: Server, jfk: bytes) -> None:
    # 3201-byte frames split a sample at every other frame boundary; a dropped byte would turn the rest to noise.
    result = await stream(url(server), jfk, speed=4.0, frame_bytes=3201)
    assert_finished(result, JFK_TEXT)
    # One byte at a time for the first 0.1 s as well.
    async with connect(url(server)) as ws:
        received = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, received))
        for byte in jfk[:3200]:
            await ws.send(bytes([byte]))
        await send_paced(ws, jfk[3200:], speed=8.0, frame_bytes=3200)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    assert_finished(received, JFK_TEXT)


@pytest.mark.parametrize("command", ["hello", '{"type": "stop"}', "[1, 2]", '{"kind": "end"}', "null"])
async def test_unknown_command_is_an_error_and_the_session_goes_on(server: Server, lamp: bytes, command: str) -> None:
    async with connect(url(server)) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await send_paced(ws, lamp[: len(lamp) // 2], speed=8.0, frame_bytes=3200)
        await ws.send(command)
        await send_paced(ws, lamp[len(lamp) // 2 :], speed=8.0, frame_bytes=3200)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    [error] = result.errors
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == "unknown_command"
    assert error["error"]["type"] == "invalid_request_error"
    assert result.close_code == 1000
    assert word_error_rate(LAMP_TEXT, result.final_text or "") <= 0.1


async def refused(ws_url: str, headers: dict[str, str] | None = None) -> LiveResult:
    """Connect, send a little audio, and collect what the server says before it closes."""
    async with connect(ws_url, additional_headers=headers) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await receiver
    return result


async def test_transcript_command_answers_with_everything_confirmed_so_far(server: Server, jfk: bytes) -> None:
    async with connect(url(server)) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await send_paced(ws, jfk, speed=4.0, frame_bytes=3200)
        await ws.send(json.dumps({"type": "transcript"}))
        await eventually(lambda: any(delta["delta"] for delta in result.deltas), what="a confirmed word")
        await ws.send(json.dumps({"type": "transcript"}))
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    assert_finished(result, JFK_TEXT)
    answers = [index for index, message in enumerate(result.messages) if message.get("type") == "transcript.text"]
    assert len(answers) == 2
    for index in answers:
        # Messages arrive in order: the answer holds exactly what the deltas before it spelled out.
        spelled = "".join(m["delta"] for m in result.messages[:index] if m.get("type") == "transcript.text.delta")
        assert result.messages[index]["text"] == spelled
        assert isinstance(result.messages[index]["unconfirmed"], str)
    assert result.messages[answers[-1]]["text"]


async def test_deeply_nested_text_frame_is_an_error_message(server: Server, lamp: bytes) -> None:
    async with connect(url(server)) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await ws.send("[" * 100_000)
        await send_paced(ws, lamp, speed=8.0, frame_bytes=3200)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    [error] = result.errors
    assert error["error"]["code"] == "unknown_command"
    assert result.close_code == 1000
    assert word_error_rate(LAMP_TEXT, result.final_text or "") <= 0.1
    assert "RecursionError" not in server.logs()


async def test_oversized_text_frame_closes_with_1009(server: Server) -> None:
    async with connect(url(server), max_size=None) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await ws.send(json.dumps({"type": "end", "padding": "x" * (1024 * 1024)}))
        await receiver
    assert result.close_code == 1009, (result.close_code, result.close_reason, result.messages)
    assert result.errors[0]["error"]["code"] == "frame_too_large"


@pytest.mark.parametrize(
    ("clip", "reference"),
    [
        ("whats_your_name_french.wav", FRENCH_TRANSLATION),
        ("living_room_light_de.wav", "Turn on the living room light."),
    ],
)
async def test_live_translation_into_english(server: Server, clip: str, reference: str) -> None:
    result = await stream(
        live_url(server.url, model=BASE, task="translate", response_format="verbose_json"),
        pcm_of(AUDIO_DIR / clip) + silence(1.0),
        speed=4.0,
    )
    assert_finished(result, reference, max_wer=0.4)
    assert_grows(result)


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [
        ({"model": "nobody/no-such-model"}, "model", "model_not_found"),
        ({"response_format": "srt"}, "response_format", "invalid_value"),
        ({"task": "summarize"}, "task", "invalid_value"),
        ({"language": "xx"}, "language", "unsupported_language"),
        ({"language": "de"}, "language", "unsupported_language"),  # tiny.en knows English only
    ],
)
async def test_bad_parameters_close_with_1008(server: Server, query: dict[str, str], param: str, code: str) -> None:
    result = await refused(url(server, **query))
    [error] = result.messages
    assert error["type"] == "error"
    assert error["error"]["param"] == param
    assert error["error"]["code"] == code
    assert result.close_code == 1008
    assert result.close_reason


@pytest.mark.parametrize("size", [1024 * 1024 + 2, 17 * 1024 * 1024])
async def test_oversized_frame_closes_with_1009(server: Server, size: int) -> None:
    # The first is over LIVE_MAX_FRAME_BYTES (1 MiB); the second also over uvicorn's own 16 MiB limit.
    async with connect(url(server), max_size=None) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await ws.send(bytes(size))
        await receiver
    assert result.close_code == 1009, (result.close_code, result.close_reason, result.messages)
    assert server.alive()


async def test_silence_and_pauses_do_not_drop_the_session(server: Server, jfk: bytes) -> None:
    half = len(jfk) // 2 // 3200 * 3200
    async with connect(url(server, response_format="verbose_json")) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await send_paced(ws, silence(3.0), speed=1.0, frame_bytes=3200)
        await send_paced(ws, jfk[:half], speed=4.0, frame_bytes=3200)
        await asyncio.sleep(2.0)  # the client stops sending for a while
        await send_paced(ws, jfk[half:], speed=4.0, frame_bytes=3200)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    assert_finished(result, JFK_TEXT)
    assert_grows(result)
    words = [word for delta in result.deltas for word in delta["words"]]
    # Word times count from the start of the session's audio, silence included.
    assert words[0]["start"] >= 2.8, words[0]


async def test_idle_timeout_finishes_and_closes_with_1001(strict_server: Server, lamp: bytes) -> None:
    started = time.monotonic()
    async with connect(url(strict_server, api_key=API_KEY)) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await send_paced(ws, lamp, speed=8.0, frame_bytes=3200)
        await receiver  # no `end`: the server gives up waiting
    assert time.monotonic() - started >= IDLE_TIMEOUT
    assert result.close_code == 1001
    assert "idle" in result.close_reason
    # What was said before the client went quiet is not lost.
    assert word_error_rate(LAMP_TEXT, result.final_text or "") <= 0.1


async def test_a_trickle_of_bytes_does_not_keep_a_session_open_forever(strict_server: Server, lamp: bytes) -> None:
    # One byte at a time, each well within the idle timeout: only the session time limit ends it.
    started = time.monotonic()
    async with connect(url(strict_server, api_key=API_KEY)) as ws:
        result = LiveResult()
        receiver = asyncio.create_task(receive_all(ws, result))
        await send_paced(ws, lamp, speed=8.0, frame_bytes=3200)
        with contextlib.suppress(ConnectionClosed):
            while not receiver.done():
                await ws.send(b"\x00")
                await asyncio.sleep(IDLE_TIMEOUT / 3)
        await receiver
    assert time.monotonic() - started >= MAX_SESSION
    assert result.close_code == 1001, (result.close_code, result.close_reason)
    assert "session time limit" in result.close_reason
    assert word_error_rate(LAMP_TEXT, result.final_text or "") <= 0.1


@pytest.mark.parametrize(
    ("query", "headers"),
    [({}, None), ({"api_key": "wrong"}, None), ({}, {"Authorization": f"Basic {API_KEY}"})],
)
async def test_api_key_refused(strict_server: Server, query: dict[str, str], headers: dict[str, str] | None) -> None:
    # The API key middleware answers the handshake itself: 401 in OpenAI's error shape, no session.
    with pytest.raises(InvalidStatus) as refusal:
        await refused(url(strict_server, **query), headers)
    assert refusal.value.response.status_code == 401
    assert json.loads(refusal.value.response.body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("query", "headers"),
    [({"api_key": API_KEY}, None), ({}, {"Authorization": f"Bearer {API_KEY}"})],
)
async def test_api_key_accepted(
    strict_server: Server, lamp: bytes, query: dict[str, str], headers: dict[str, str] | None
) -> None:
    result = await stream(url(strict_server, **query), lamp, speed=8.0, headers=headers)
    assert_finished(result, LAMP_TEXT)


async def test_client_leaving_mid_stream_frees_the_pool(strict_server: Server, jfk: bytes, lamp: bytes) -> None:
    # strict_server has one inference slot: a session that kept it after its client left would block this one.
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for abrupt in (False, True, False):
        async with connect(url(strict_server), additional_headers=headers) as ws:
            await send_paced(ws, jfk[: 4 * 32000], speed=4.0, frame_bytes=3200)
            await asyncio.sleep(0.3)  # a transcription step is likely in flight now
            if abrupt:
                ws.transport.abort()  # no closing handshake at all
    started = time.monotonic()
    result = await stream(url(strict_server), lamp, speed=8.0, headers=headers, time_limit=30)
    assert_finished(result, LAMP_TEXT)
    assert time.monotonic() - started < 15
    # Every session released its model lease (the abandoned ones once their last step had finished).
    async with httpx.AsyncClient(base_url=strict_server.url, headers=headers) as http:
        for _ in range(50):
            [tiny] = [model for model in (await http.get("/api/ps")).json()["models"] if model["id"] == TINY_EN]
            if tiny["ref_count"] == 0:
                break
            await asyncio.sleep(0.1)
    assert tiny["ref_count"] == 0, tiny
    assert strict_server.alive()


def test_http_post_on_the_same_path_still_transcribes(server: Server, client: OpenAI) -> None:
    with (AUDIO_DIR / "jfk.flac").open("rb") as audio:
        transcript = client.audio.transcriptions.create(model=TINY_EN, file=audio)
    assert word_error_rate(JFK_TEXT, transcript.text) <= 0.1

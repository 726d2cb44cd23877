"""Realtime transcription sessions through the official openai SDK (`client.realtime.connect(intent=transcription)`)
against a real server on a free port and the real tiny.en model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferSpeechStartedEvent,
    RealtimeErrorEvent,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, running_server, word_error_rate
from tests.live.live_client import eventually_async
from tests.realtime.realtime_client import Events, append_paced, b64, collect, g711, pcm_at, sdk, silence

pytestmark = pytest.mark.server
API_KEY = "realtime-test-key"
SESSION = {"type": "transcription"}


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return pcm_at(AUDIO_DIR / "jfk.flac")


@pytest.fixture(scope="module")
def lamp() -> bytes:
    return pcm_at(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[Server]:
    with running_server({"API_KEY": API_KEY, "STT_MODEL_TTL": "-1", "INFERENCE_CONCURRENCY": "1"}) as running:
        yield running
        assert running.alive(), running.logs()


@pytest.fixture(scope="module")
def pause_stepped_server() -> Iterator[Server]:
    """Live steps only where the VAD hears a pause (a 4 s chunk is longer than any stretch of jfk between two of
    his pauses): each such step ends where the VAD heard the pause, however busy the machine, so every run
    transcribes the same audio and gets the same words. With 1 s chunks the steps in between take whatever
    audio has arrived when they start, which depends on the load, and tiny.en's words on jfk change with
    where its audio is cut ("my" or "am I", a "Thank you." after his last word)."""
    with running_server({"STT_MODEL_TTL": "-1", "LIVE_MIN_CHUNK_SECONDS": "4"}) as running:
        yield running
        assert running.alive(), running.logs()


def connect_transcription(server: Server, api_key: str = "not-needed") -> Any:
    return sdk(server.url, api_key).realtime.connect(model=TINY_EN, extra_query={"intent": "transcription"})


def update(**audio_input: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {**SESSION, "audio": {"input": audio_input}}}


def completed_all(count: int) -> Any:
    return lambda events: len(events.of("conversation.item.done")) >= count


def errors(events: Events) -> list[Any]:
    return events.of("error")


async def test_vad_turns_send_confirmed_words_while_the_turn_goes_on(
    pause_stepped_server: Server, jfk: bytes, lamp: bytes
) -> None:
    events = Events()
    async with connect_transcription(pause_stepped_server) as connection:
        # jfk pauses for up to a second between clauses: a 2 s silence ends its turn, the lamp clip is a second.
        await connection.send(update(turn_detection={"type": "server_vad", "silence_duration_ms": 2000}))
        # As a microphone client would: audio flows once the session is set up.
        await collect(connection, events, lambda e: bool(e.of("session.updated")))
        audio = silence(0.5) + jfk + silence(2.5) + lamp + silence(2.5)
        sender = asyncio.create_task(append_paced(connection, audio, speed=1.0))
        await collect(connection, events, completed_all(2), limit=180)
        await sender
    assert not errors(events), errors(events)
    created = events.of("session.created")[0]
    assert created.session.type == "transcription"
    assert created.session.audio.input.format.rate == 24000
    assert events.of("session.updated")[0].session.audio.input.turn_detection.silence_duration_ms == 2000
    started = events.of("input_audio_buffer.speech_started")
    assert all(isinstance(event, InputAudioBufferSpeechStartedEvent) for event in started)
    assert [event.item_id for event in started] == [
        event.item_id for event in events.of("input_audio_buffer.committed")
    ]
    first, second = (event.item_id for event in started)
    # The first turn starts at the speech (less the 300 ms prefix padding) and ends 2 s after it.
    assert 100 <= started[0].audio_start_ms <= 600
    stopped = events.of("input_audio_buffer.speech_stopped")[0]
    assert 12_000 <= stopped.audio_end_ms <= 14_500
    # Words were confirmed while jfk was still speaking: a delta before his turn's speech_stopped.
    deltas = [e for e in events.of("conversation.item.input_audio_transcription.delta") if e.item_id == first]
    assert all(isinstance(event, ConversationItemInputAudioTranscriptionDeltaEvent) for event in deltas)
    assert events.index("conversation.item.input_audio_transcription.delta", item_id=first) < events.index(
        "input_audio_buffer.speech_stopped", item_id=first
    )
    completed = {e.item_id: e for e in events.of("conversation.item.input_audio_transcription.completed")}
    assert all(isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent) for event in completed.values())
    assert word_error_rate(JFK_TEXT, completed[first].transcript) <= 0.1, completed[first].transcript
    assert word_error_rate(LAMP_TEXT, completed[second].transcript) <= 0.2, completed[second].transcript
    assert "".join(delta.delta for delta in deltas) == completed[first].transcript
    assert completed[first].usage.type == "duration"
    assert 11.0 <= completed[first].usage.seconds <= 14.5
    # Items in order: committed, added, then completed and done, each naming its predecessor.
    assert events.of("input_audio_buffer.committed")[1].previous_item_id == first
    assert events.index("conversation.item.added", item=events.of("conversation.item.added")[0].item) < events.index(
        "conversation.item.input_audio_transcription.completed", item_id=first
    )
    done = events.of("conversation.item.done")
    assert [item.item.id for item in done] == [first, second]
    assert done[0].item.content[0].transcript == completed[first].transcript


async def test_manual_commits_clear_and_an_empty_commit(server: Server, jfk: bytes, lamp: bytes) -> None:
    events = Events()
    async with connect_transcription(server) as connection:
        await connection.send(update(turn_detection=None, transcription={"model": TINY_EN, "language": "en"}))
        await connection.send({"type": "input_audio_buffer.commit", "event_id": "empty-commit"})
        # Half of jfk, then cleared: none of it may reach the next item.
        await append_paced(connection, jfk[: len(jfk) // 2 // 2 * 2], speed=20.0)
        await connection.send({"type": "input_audio_buffer.clear"})
        await append_paced(connection, lamp, speed=20.0)
        await connection.send({"type": "input_audio_buffer.commit"})
        await collect(connection, events, completed_all(1))
    [error] = errors(events)
    assert isinstance(error, RealtimeErrorEvent)
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert error.error.event_id == "empty-commit"
    assert events.of("session.updated")[0].session.audio.input.turn_detection is None
    assert len(events.of("input_audio_buffer.cleared")) == 1
    assert not events.of("input_audio_buffer.speech_started")
    [transcript] = events.transcripts()
    assert word_error_rate(LAMP_TEXT, transcript) <= 0.2, transcript
    assert "fellow" not in transcript.lower()
    item = events.of("input_audio_buffer.committed")[0].item_id
    # In manual mode the item's id is first told by `committed`: no delta may come before it.
    assert events.index("input_audio_buffer.committed") < events.index(
        "conversation.item.input_audio_transcription.delta"
    )
    assert (
        "".join(e.delta for e in events.of("conversation.item.input_audio_transcription.delta") if e.item_id == item)
        == transcript
    )


@pytest.mark.parametrize("codec", ["pcm_mulaw", "pcm_alaw"])
async def test_telephone_audio_at_8_khz(server: Server, codec: str) -> None:
    audio = g711(AUDIO_DIR / "jfk.flac", codec)
    kind = "audio/pcmu" if codec == "pcm_mulaw" else "audio/pcma"
    events = Events()
    async with connect_transcription(server) as connection:
        await connection.send(update(format={"type": kind}, turn_detection=None))
        await append_paced(connection, audio, speed=20.0, chunk_bytes=1600, rate=8000, bytes_per_sample=1)
        await connection.send({"type": "input_audio_buffer.commit"})
        await collect(connection, events, completed_all(1))
    assert not errors(events), errors(events)
    assert events.of("session.updated")[0].session.audio.input.format.type == kind
    [transcript] = events.transcripts()
    assert word_error_rate(JFK_TEXT, transcript) <= 0.2, transcript


BAD_EVENTS: list[tuple[dict[str, Any], str, str | None]] = [
    ({"type": "response.create"}, "invalid_value", "type"),
    ({"type": "input_audio_buffer.append", "audio": "%%% not base64"}, "invalid_value", "audio"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    (update(volume=11), "unknown_parameter", "session.audio.input.volume"),
    (update(format={"type": "audio/pcm", "rate": 12345}), "invalid_value", "session.audio.input.format.rate"),
    (update(transcription={"language": "de"}), "unsupported_language", "session.audio.input.transcription.language"),
    (
        update(transcription={"model": "nobody/no-such-model"}),
        "model_not_found",
        "session.audio.input.transcription.model",
    ),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_value", "session.type"),
]


async def test_bad_events_get_error_events_and_the_session_goes_on(server: Server, lamp: bytes) -> None:
    events = Events()
    async with connect_transcription(server) as connection:
        for index, (event, _, _) in enumerate(BAD_EVENTS):
            await connection.send({**event, "event_id": f"bad-{index}"})
        await connection.send(update(turn_detection=None))
        await append_paced(connection, lamp, speed=20.0)
        await connection.send({"type": "input_audio_buffer.commit"})
        await collect(connection, events, completed_all(1))
    by_client_event = {error.error.event_id: error.error for error in errors(events)}
    for index, (_, code, param) in enumerate(BAD_EVENTS):
        error = by_client_event[f"bad-{index}"]
        assert (error.code, error.param) == (code, param), error
        assert error.type == "invalid_request_error"
        assert error.message
    # The bad updates changed nothing: still 24 kHz PCM, still tiny.en.
    updated = events.of("session.updated")[-1].session.audio.input
    assert (updated.format.rate, updated.transcription.model) == (24000, TINY_EN)
    assert word_error_rate(LAMP_TEXT, events.transcripts()[0]) <= 0.2


async def test_frames_that_are_not_events(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription&model=" + TINY_EN
    async with connect(url, max_size=None) as websocket:
        assert json.loads(await websocket.recv())["type"] == "session.created"
        for frame in ["not json", "[" * 100_000, "[1, 2]", b"\x00\x01"]:
            await websocket.send(frame)
            reply = json.loads(await websocket.recv())
            assert reply["type"] == "error", reply
            assert reply["error"]["code"] == "invalid_json"
        await websocket.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "still-here"}))
        reply = json.loads(await websocket.recv())
        assert reply["error"]["event_id"] == "still-here"
    assert "RecursionError" not in server.logs()


async def test_an_unknown_intent_is_refused_with_a_reason(server: Server) -> None:
    # No intent is a conversation session (tests/realtime/test_realtime_conversation.py); others are refused.
    url = server.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime&intent=summary"
    async with connect(url) as websocket:
        error = json.loads(await websocket.recv())
        await websocket.wait_closed()
    assert error["error"]["code"] == "unsupported_intent"
    assert websocket.close_code == 1008


async def test_api_key_in_the_header_or_the_browser_subprotocol(keyed_server: Server, lamp: bytes) -> None:
    # The SDK sends `Authorization: Bearer`.
    events = Events()
    async with connect_transcription(keyed_server, api_key=API_KEY) as connection:
        await collect(connection, events, lambda e: bool(e.of("session.created")))
    # A browser offers the key as a subprotocol beside `realtime`; the server must answer with `realtime`.
    url = keyed_server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription&model=" + TINY_EN
    async with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{API_KEY}"]) as websocket:  # type: ignore[list-item]
        assert websocket.subprotocol == "realtime"
        assert json.loads(await websocket.recv())["type"] == "session.created"
    for protocols, headers in (
        (None, None),
        (["realtime", "openai-insecure-api-key.wrong"], None),
        (None, {"Authorization": "Bearer wrong"}),
    ):
        with pytest.raises(InvalidStatus) as refusal:
            async with connect(url, subprotocols=protocols, additional_headers=headers):  # type: ignore[arg-type]
                pass
        assert refusal.value.response.status_code == 401
    assert API_KEY not in keyed_server.logs()


async def test_a_client_leaving_mid_turn_stops_its_work(keyed_server: Server, jfk: bytes, lamp: bytes) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = keyed_server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription&model=" + TINY_EN
    for abrupt in (False, True):
        async with connect(url, additional_headers=headers) as websocket:
            assert json.loads(await websocket.recv())["type"] == "session.created"
            for offset in range(0, len(jfk) // 2, 4800):
                await websocket.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": b64(jfk[offset : offset + 4800])})
                )
            await asyncio.sleep(0.5)  # speech has started, a step is likely running
            if abrupt:
                websocket.transport.abort()
    async with httpx.AsyncClient(base_url=keyed_server.url, headers=headers) as http:

        async def released() -> bool:
            models = (await http.get("/api/ps")).json()["models"]
            return all(model["ref_count"] == 0 for model in models)

        await eventually_async(released, limit_seconds=60, what="every lease released")
    # The one inference slot is free again: a new session is served.
    events = Events()
    async with connect_transcription(keyed_server, api_key=API_KEY) as connection:
        await connection.send(update(turn_detection=None))
        await append_paced(connection, lamp, speed=20.0)
        await connection.send({"type": "input_audio_buffer.commit"})
        await collect(connection, events, completed_all(1), limit=60)
    assert word_error_rate(LAMP_TEXT, events.transcripts()[0]) <= 0.2


async def test_idle_timeout_commits_the_silence_as_an_empty_item(server: Server) -> None:
    events = Events()
    async with connect_transcription(server) as connection:
        await connection.send(update(turn_detection={"type": "server_vad", "idle_timeout_ms": 5000}))
        await append_paced(connection, silence(6.0), speed=50.0)
        await collect(connection, events, completed_all(1), limit=60)
    assert not errors(events), errors(events)
    [timeout] = events.of("input_audio_buffer.timeout_triggered")
    assert (timeout.audio_start_ms, 5000 <= timeout.audio_end_ms <= 5200) == (0, True)
    assert events.of("input_audio_buffer.committed")[0].item_id == timeout.item_id
    assert events.transcripts() == [""]
    assert not events.of("input_audio_buffer.speech_started")

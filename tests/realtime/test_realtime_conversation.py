"""Realtime conversation sessions through the official openai SDK (`client.realtime.connect(model=<LLM>)`),
with the stand-in LLM thinking, tiny.en hearing and piper speaking, against a real server on a free port.

Spoken answers are checked by transcribing them back with the server's own /v1/audio/transcriptions; what
reached the LLM is read from the stand-in's record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openai import OpenAI

from speaches.realtime.audio_input import MU_LAW_TO_PCM16
from tests.chat.audio_checks import heard, pcm16_to_wav
from tests.chat.llm_stand_in import StandInLlm, answer_for
from tests.helpers import AUDIO_DIR, LAMP_TEXT, TINY_EN, Server, running_server, word_error_rate
from tests.live.live_client import eventually_async
from tests.realtime.realtime_client import Events, append_paced, collect, g711, pcm_at, sdk, silence

pytestmark = pytest.mark.server

VAD = {"type": "server_vad", "silence_duration_ms": 500}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def llm() -> Iterator[StandInLlm]:
    with StandInLlm() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def voice_server(llm: StandInLlm) -> Iterator[Server]:
    env = {
        "CHAT_COMPLETION_BASE_URL": llm.base_url,
        "CHAT_COMPLETION_TRANSCRIPTION_MODEL": TINY_EN,
        "STT_MODEL_TTL": "-1",
        "TTS_MODEL_TTL": "-1",
    }
    with running_server(env) as running:
        yield running
        assert running.alive(), running.logs()


@pytest.fixture(scope="module")
def lamp() -> bytes:
    return pcm_at(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")


@pytest.fixture(scope="module")
def http(voice_server: Server) -> OpenAI:
    return OpenAI(base_url=f"{voice_server.url}/v1", api_key="x", max_retries=0, timeout=120)


def done(events: Events, count: int = 1, *, errors: int = 0) -> Any:
    """Until `count` responses are done (or an error beyond the `errors` expected: the test then fails)."""
    return lambda e: len(e.of("response.done")) >= count or len(e.of("error")) > errors


def audio_of(events: Events, response_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(event.delta)
        for event in events.of("response.output_audio.delta")
        if response_id is None or event.response_id == response_id
    )


async def test_a_spoken_turn_gets_a_spoken_answer(
    voice_server: Server, llm: StandInLlm, lamp: bytes, http: OpenAI
) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="turns") as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer briefly.",
                "audio": {"input": {"turn_detection": VAD}, "output": {"voice": "alloy"}},
            }
        )
        await collect(connection, events, lambda e: bool(e.of("session.updated")))
        await append_paced(connection, silence(0.3) + lamp + silence(1.5), speed=4.0)
        await collect(connection, events, done(events), limit=180)
    assert not events.of("error"), events.of("error")
    session = events.of("session.updated")[0].session
    assert session.type == "realtime"
    assert session.instructions == "Answer briefly."
    assert session.audio.input.turn_detection.create_response is True
    assert session.output_modalities == ["audio"]

    kinds = [event.type for event in events.items]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    firsts = [kinds.index(kind) for kind in order]
    assert firsts == sorted(firsts), [kinds[i] for i in sorted(firsts)]
    user_item = events.of("conversation.item.done")[0].item
    assistant_added = next(e for e in events.of("conversation.item.added") if e.item.role == "assistant")
    assert assistant_added.previous_item_id == user_item.id

    sent = llm.last("turns").messages
    assert sent[0] == {"role": "system", "content": "Answer briefly."}
    assert word_error_rate(LAMP_TEXT, sent[1]["content"]) <= 0.2
    response = events.of("response.done")[0].response
    assert response.status == "completed"
    assert response.usage.total_tokens == 30
    transcript = events.of("response.output_audio_transcript.done")[0].transcript
    assert transcript == answer_for(sent)
    assert response.output[0].content[0].transcript == transcript
    assert word_error_rate(transcript, heard(http, pcm16_to_wav(audio_of(events)))) < 0.35


async def test_text_items_and_text_answers(voice_server: Server, llm: StandInLlm) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="texts") as connection:
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Plain words"}]}
        )
        # An item deleted before the answer is not the LLM's to read.
        said = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Taken back"}]}
        await connection.conversation.item.create(item={**said, "id": "item_taken_back"})
        await connection.conversation.item.delete(item_id="item_taken_back")
        await connection.response.create()
        await collect(connection, events, done(events))
        retrieved_id = events.of("conversation.item.added")[0].item.id
        await connection.conversation.item.retrieve(item_id=retrieved_id)
        await collect(connection, events, lambda e: bool(e.of("conversation.item.retrieved")))
    assert not events.of("error"), events.of("error")
    assert not events.of("response.output_audio.delta")
    text = "".join(event.delta for event in events.of("response.output_text.delta"))
    assert text.split() == answer_for([{"role": "user", "content": "Plain words"}]).split()
    assert events.of("response.output_text.done")[0].text == text
    assert events.of("conversation.item.retrieved")[0].item.content[0].text == "Plain words"
    assert [event.item_id for event in events.of("conversation.item.deleted")] == ["item_taken_back"]
    assert llm.last("texts").messages == [{"role": "user", "content": "Plain words"}]


async def test_barge_in_cancels_the_answer_and_truncation_keeps_what_was_heard(
    voice_server: Server, llm: StandInLlm, lamp: bytes
) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="slow") as connection:
        await connection.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": VAD}}})
        await collect(connection, events, lambda e: bool(e.of("session.updated")))
        await append_paced(connection, silence(0.3) + lamp + silence(1.0), speed=4.0)
        await collect(connection, events, lambda e: bool(e.of("response.output_audio.delta")), limit=180)
        slow = llm.last("slow")
        # The person speaks over the answer.
        await append_paced(connection, lamp[: len(lamp) // 2], speed=4.0)
        await collect(connection, events, done(events), limit=120)
        cancelled = events.of("response.done")[0].response
        answer_item = cancelled.output[0]
        await connection.conversation.item.truncate(item_id=answer_item.id, content_index=0, audio_end_ms=1000)
        await collect(connection, events, lambda e: bool(e.of("conversation.item.truncated")))
        # What the LLM is told next: only the words heard in that first second.
        await connection.session.update(session={"type": "realtime", "model": "after-barge-in"})
        await append_paced(connection, lamp[len(lamp) // 2 :] + silence(1.5), speed=4.0)
        await collect(connection, events, done(events, 2), limit=180)
    assert not events.of("error"), events.of("error")
    assert cancelled.status == "cancelled"
    assert cancelled.status_details.reason == "turn_detected"
    assert answer_item.status == "incomplete"
    cleared = events.of("output_audio_buffer.cleared")
    assert [event.response_id for event in cleared] == [cancelled.id]
    kinds = [event.type for event in events.items]
    second_speech = [i for i, kind in enumerate(kinds) if kind == "input_audio_buffer.speech_started"][1]
    assert second_speech < kinds.index("response.done")  # the person spoke, then the answer stopped
    llm.wait_until(lambda: slow.cancelled)
    assert len(slow.sentence_sent_at) < 20  # of 60: the LLM was hung up on

    spoken_before = answer_item.content[0].transcript
    heard_part = llm.last("after-barge-in").messages[1]
    assert heard_part["role"] == "assistant"
    assert 0 < len(heard_part["content"].split()) < len(spoken_before.split())
    assert spoken_before.startswith(heard_part["content"])


async def test_function_tools_round_trip(voice_server: Server, llm: StandInLlm, http: OpenAI) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="tools") as connection:
        await connection.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": "auto"})
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}
        )
        await connection.response.create()
        await collect(connection, events, done(events))
        call = events.of("response.function_call_arguments.done")[0]
        await connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": "sunny and 21 degrees"}
        )
        await connection.response.create()
        await collect(connection, events, done(events, 2), limit=120)
    assert not events.of("error"), events.of("error")
    first, second = (event.response for event in events.of("response.done"))
    assert first.output[0].type == "function_call"
    assert first.output[0].name == "get_weather"
    assert json.loads(call.arguments) == {"question": "Weather in Paris?"}
    deltas = "".join(e.delta for e in events.of("response.function_call_arguments.delta"))
    assert deltas == call.arguments
    assert llm.last("tools").body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    sent = llm.last("tools").messages
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny and 21 degrees"}
    transcript = second.output[0].content[0].transcript
    assert transcript == "The tool says sunny and 21 degrees. That is all I know."
    assert word_error_rate(transcript, heard(http, pcm16_to_wav(audio_of(events, second.id)))) < 0.35


async def test_response_cancel_and_one_response_at_a_time(voice_server: Server, llm: StandInLlm) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="slow") as connection:
        await connection.response.cancel()  # nothing to cancel
        await collect(connection, events, lambda e: bool(e.of("error")))
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go on"}]}
        )
        await connection.response.create()
        await collect(connection, events, lambda e: bool(e.of("response.output_audio.delta")), limit=120)
        await connection.response.create()  # while the first is under way
        await collect(connection, events, lambda e: len(e.of("error")) >= 2)
        await connection.response.cancel()
        await collect(connection, events, done(events, errors=2))
    codes = [event.error.code for event in events.of("error")]
    assert codes == ["response_cancel_not_active", "conversation_already_has_active_response"]
    response = events.of("response.done")[0].response
    assert response.status == "cancelled"
    assert response.status_details.reason == "client_cancelled"
    slow = llm.last("slow")
    llm.wait_until(lambda: slow.cancelled)


async def test_a_client_leaving_mid_answer_stops_the_llm_and_returns_the_leases(
    voice_server: Server, llm: StandInLlm
) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="slow") as connection:
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Talk"}]}
        )
        await connection.response.create()
        await collect(connection, events, lambda e: bool(e.of("response.output_audio.delta")), limit=120)
    slow = llm.last("slow")
    llm.wait_until(lambda: slow.cancelled)

    async def no_leases() -> bool:
        async with httpx.AsyncClient() as client:
            models = (await client.get(f"{voice_server.url}/api/ps")).json()["models"]
        return all(model["ref_count"] == 0 for model in models)

    await eventually_async(no_leases, 15, "every lease given back")


async def test_g711_output_and_an_llm_failure(voice_server: Server, http: OpenAI) -> None:
    events = Events()
    async with sdk(voice_server.url).realtime.connect(model="phone") as connection:
        await connection.session.update(
            session={"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}
        )
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Call me"}]}
        )
        await connection.response.create()
        await collect(connection, events, done(events))
        # The same answer again, out of band, spoken faster.
        await connection.session.update(session={"type": "realtime", "audio": {"output": {"speed": 1.5}}})
        call_me = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Call me"}]}
        await connection.response.create(response={"conversation": "none", "input": [call_me]})
        await collect(connection, events, done(events, 2))
        await connection.session.update(session={"type": "realtime", "model": "error-404"})
        await connection.response.create()
        await collect(connection, events, done(events, 3))
    assert not events.of("error"), events.of("error")
    first, faster = (event.response for event in events.of("response.done")[:2])
    assert events.of("session.updated")[1].session.audio.output.speed == 1.5
    assert faster.output[0].content[0].transcript == first.output[0].content[0].transcript
    # Piper speaks at 1.5 times the pace: two thirds of the audio, give or take its pauses.
    assert 0.55 < len(audio_of(events, faster.id)) / len(audio_of(events, first.id)) < 0.8
    mu_law = audio_of(events, first.id)
    pcm = MU_LAW_TO_PCM16[np.frombuffer(mu_law, dtype=np.uint8)].astype("<i2").tobytes()
    assert 2 < len(mu_law) / 8000 < 12
    transcript = answer_for([{"role": "user", "content": "Call me"}])
    assert word_error_rate(transcript, heard(http, pcm16_to_wav(pcm, 8000))) < 0.4
    failed = events.of("response.done")[2].response
    assert failed.status == "failed"
    assert failed.status_details.error.code == "model_not_found"


async def test_without_an_llm_the_session_is_refused_saying_what_to_set(server: Server) -> None:
    events = Events()
    async with sdk(server.url).realtime.connect(model="llama3.2") as connection:
        await collect(connection, events, lambda e: bool(e.of("error")))
    error = events.of("error")[0].error
    assert "CHAT_COMPLETION_BASE_URL" in error.message
    assert error.code == "chat_completion_not_configured"


async def test_created_audio_items_are_transcribed_before_the_answer(
    voice_server: Server, llm: StandInLlm, lamp: bytes
) -> None:
    events = Events()
    audio = base64.b64encode(lamp).decode()
    async with sdk(voice_server.url).realtime.connect(model="items") as connection:
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
        )
        await connection.response.create()  # sent at once: the answer waits for the transcript
        await collect(connection, events, done(events), limit=120)
    assert not events.of("error"), events.of("error")
    assert word_error_rate(LAMP_TEXT, events.transcripts()[0]) <= 0.2
    assert word_error_rate(LAMP_TEXT, llm.last("items").messages[0]["content"]) <= 0.2


async def test_g711_input_with_manual_commits_and_the_transcription_settings(
    voice_server: Server, llm: StandInLlm
) -> None:
    events = Events()
    phone = g711(AUDIO_DIR / "turn_on_the_living_room_lamp.wav", "pcm_mulaw")
    async with sdk(voice_server.url).realtime.connect(model="manual") as connection:
        await connection.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": TINY_EN, "language": "en"},
                        "turn_detection": None,
                    }
                },
            }
        )
        await collect(connection, events, lambda e: bool(e.of("session.updated")))
        await append_paced(connection, phone, speed=20.0, chunk_bytes=800, rate=8000, bytes_per_sample=1)
        await connection.input_audio_buffer.commit()
        await connection.response.create()  # the answer waits for the committed turn's transcript
        await collect(connection, events, done(events), limit=120)
    assert not events.of("error"), events.of("error")
    session = events.of("session.updated")[0].session
    assert session.audio.input.format.type == "audio/pcmu"
    assert session.audio.input.transcription.language == "en"
    assert session.audio.input.turn_detection is None
    assert not events.of("input_audio_buffer.speech_started")
    assert word_error_rate(LAMP_TEXT, events.transcripts()[0]) <= 0.2
    assert word_error_rate(LAMP_TEXT, llm.last("manual").messages[0]["content"]) <= 0.2
    assert events.of("response.done")[0].response.status == "completed"

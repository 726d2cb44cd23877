"""Realtime responses in-process: the stand-in LLM's answers as Realtime server events, text and spoken,
with tool calls, cancellation and failures."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from speaches.chat.conversation import Conversation
from speaches.chat.llm import LlmClient
from speaches.chat.responder import Response, ResponsePlan, VoiceOutput
from speaches.config import Settings
from speaches.inference import InferencePool
from speaches.models.catalog import Catalog, Kind, ModelRef
from speaches.models.manager import ModelManager
from speaches.speech.piper import piper_voice_kind
from speaches.state import AppState
from tests.chat.llm_stand_in import StandInLlm, answer_for

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
async def state(llm: StandInLlm) -> AsyncIterator[AppState]:
    settings = Settings(chat_completion_base_url=llm.base_url)
    models = ModelManager()
    models.register(piper_voice_kind(settings))
    app_state = AppState(settings=settings, models=models, pool=InferencePool(2, 8), catalog=Catalog(settings))
    yield app_state
    await app_state.chat.aclose()
    await models.close()
    app_state.pool.shutdown()


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def __call__(self, kind: str, /, **fields: Any) -> None:
        self.events.append({"type": kind, **fields})
        self._arrived.set()

    async def wait_for(self, kind: str) -> None:
        while not self.of(kind):
            self._arrived.clear()
            await self._arrived.wait()

    def kinds(self) -> list[str]:
        return [event["type"] for event in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


def plan(
    model: str, *, voice: VoiceOutput | None = None, conversation: Conversation | None = None, **body: Any
) -> ResponsePlan:
    return ResponsePlan(body={"model": model, "messages": HELLO, **body}, voice=voice, conversation=conversation)


async def test_a_text_answer(state: AppState) -> None:
    events, conversation = Recorder(), Conversation()
    response = Response(state, state.chat.llm, plan("text", conversation=conversation), events)
    await response.run()
    expected = answer_for(HELLO)
    assert events.kinds()[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert "".join(event["delta"] for event in events.of("response.output_text.delta")).split() == expected.split()
    assert events.kinds()[-5:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done = events.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] == 30
    item = conversation.items()[0]
    assert item["status"] == "completed"
    assert item["content"][0]["text"].split() == expected.split()
    assert done["output"] == [item]


async def test_a_tool_call(state: AppState) -> None:
    events = Recorder()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    await Response(state, state.chat.llm, plan("calls", tools=tools), events).run()
    added = events.of("response.output_item.added")
    assert [event["item"]["type"] for event in added] == ["function_call"]
    arguments = "".join(event["delta"] for event in events.of("response.function_call_arguments.delta"))
    done = events.of("response.function_call_arguments.done")[0]
    assert done["name"] == "lookup"
    assert done["call_id"] == "call_stand_in_1"
    assert json.loads(done["arguments"]) == json.loads(arguments) == {"question": "Hello"}
    assert events.of("response.done")[0]["response"]["output"][0]["status"] == "completed"


async def test_a_spoken_answer_records_how_long_each_piece_sounds(state: AppState) -> None:
    events, conversation = Recorder(), Conversation()
    voice = VoiceOutput(ModelRef(Kind.TTS, "en_US-joe-medium"))
    await Response(state, state.chat.llm, plan("spoken", voice=voice, conversation=conversation), events).run()
    transcript = "".join(event["delta"] for event in events.of("response.output_audio_transcript.delta"))
    assert transcript == answer_for(HELLO)
    audio = b"".join(base64.b64decode(event["delta"]) for event in events.of("response.output_audio.delta"))
    assert all(len(base64.b64decode(event["delta"])) <= 48_000 for event in events.of("response.output_audio.delta"))
    # The first piece is spoken before the rest of the transcript is out: transcript and audio alternate.
    kinds = [kind for kind in events.kinds() if kind.startswith("response.output_audio")]
    assert kinds.index("response.output_audio.delta") < len(kinds) - kinds[::-1].index(
        "response.output_audio_transcript.delta"
    )
    item = conversation.items()[0]
    assert conversation.audio_ms(item["id"]) == pytest.approx(len(audio) / 48)
    assert events.of("response.output_audio_transcript.done")[0]["transcript"] == transcript


async def test_cancel_stops_the_llm_and_keeps_what_was_said(state: AppState, llm: StandInLlm) -> None:
    events, conversation = Recorder(), Conversation()
    response = Response(state, state.chat.llm, plan("slow", conversation=conversation), events)
    running = asyncio.create_task(response.run())
    await asyncio.wait_for(events.wait_for("response.output_text.delta"), 30)
    response.cancel("client_cancelled")
    await running
    done = events.of("response.done")[0]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    item = conversation.items()[0]
    assert item["status"] == "incomplete"
    assert "This is slow sentence number 0.".startswith(item["content"][0]["text"].strip())
    assert item["content"][0]["text"].strip()
    exchange = llm.last("slow")
    await asyncio.to_thread(llm.wait_until, lambda: exchange.cancelled)


async def test_an_llm_failure_fails_the_response(state: AppState) -> None:
    for model, code in (("error-404", "model_not_found"), ("midstream-error", "model_crashed")):
        events = Recorder()
        await Response(state, state.chat.llm, plan(model), events).run()
        done = events.of("response.done")[0]["response"]
        assert done["status"] == "failed"
        assert done["status_details"]["error"]["code"] == code


async def test_an_unreachable_llm_fails_the_response_saying_so() -> None:
    settings = Settings(chat_completion_base_url="http://127.0.0.1:9/v1")
    state = AppState(settings=settings, models=ModelManager(), pool=InferencePool(1, 1), catalog=Catalog(settings))
    events = Recorder()
    await Response(state, LlmClient(settings), plan("m"), events).run()
    details = events.of("response.done")[0]["response"]["status_details"]
    assert details["type"] == "failed"
    assert "could not be reached" in details["error"]["message"]

"""Realtime conversation sessions (`WS /v1/realtime?model=<LLM>`): a spoken conversation with any chat LLM.

The session hears with a transcription session (speaches.realtime.transcription: the input buffer, server
VAD, turns transcribed while they are spoken), whose events it relays into the conversation: each
committed turn becomes a user item, and once its transcript is complete (with server VAD and
`create_response`) a response starts. The thinking is the LLM's at CHAT_COMPLETION_BASE_URL, named by the
connection's `model`; each response is a `speaches.chat.responder.Response` speaking with piper.

Barge-in: when the VAD hears the person start speaking while a response is under way (and
`interrupt_response` is not off), the response is cancelled (`response.done` with status `cancelled`,
reason `turn_detected`) and `output_audio_buffer.cleared` tells the client to drop the audio it still has
of it. A client that then sends `conversation.item.truncate` with how much it played leaves the LLM only
the words that were heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from speaches.chat.conversation import Conversation, chat_messages, chat_tool_choice, chat_tools
from speaches.chat.responder import Response, ResponsePlan, VoiceOutput
from speaches.errors import ApiError
from speaches.models.manager import Lease
from speaches.realtime import conversation_protocol as events
from speaches.realtime import protocol
from speaches.realtime.audio_output import OutputFormat, output_format
from speaches.realtime.conversation_items import ItemHandling
from speaches.realtime.protocol import EventError
from speaches.realtime.transcription import TranscriptionSession
from speaches.realtime.work import Outbox
from speaches.state import AppState

logger = logging.getLogger(__name__)

TRANSCRIPT_WAIT_SECONDS = 30.0
"""A response waits at most this long for the transcripts of the turns it answers."""
HEARING_CHUNK_SECONDS = 2.0
"""The ears transcribe a turn again after this much new audio (or `LIVE_MIN_CHUNK_SECONDS`, if longer), not
after every second: the answer waits for the turn's whole transcript, not for its deltas, and what it waits
for is the step that the VAD starts at the pause that ends the speech. A step on a chunk still running then
holds that one up (by 0.3 to 0.8 s on the 2-core machine); half as many such steps, half as often in the way,
and half the CPU."""


@dataclass
class ConversationConfig:
    llm_model: str
    instructions: str = ""
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    voice: str = ""
    speed: float = 1.0
    output: OutputFormat = field(default_factory=lambda: output_format(None, "session.audio.output.format"))
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    max_output_tokens: int | str = "inf"
    parallel_tool_calls: bool | None = None
    create_response: bool = True
    interrupt_response: bool = True


class ConversationSession:
    """Driven by `RealtimeConnection` like the transcription session: `start`, `handle` each client event,
    `outbox` for the server events, `finish` or `abandon` at the end."""

    closing = False

    def __init__(self, state: AppState, *, model: str | None) -> None:
        self.state = state
        self.settings = state.settings
        self.outbox = Outbox()
        self.session_id = protocol.new_id("sess")
        self.conversation = Conversation()
        self._requested_model = model
        self.config: ConversationConfig | None = None
        self._voice_lease: Lease[Any] | None = None
        self._voice_ref: Any = None
        chunk = max(self.settings.live_min_chunk_seconds, HEARING_CHUNK_SECONDS)
        self.ears = TranscriptionSession(
            self.settings.model_copy(update={"live_min_chunk_seconds": chunk}),
            state.catalog,
            state.models,
            state.pool,
            model=self.settings.chat_completion_transcription_model,
        )
        self.ears.outbox = _Ears(self)
        self.items = ItemHandling(self)
        self._response: Response | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._answer_next_turn = False

    @property
    def received_seconds(self) -> float:
        return self.ears.received_seconds

    # --- lifecycle ---

    async def start(self) -> None:
        """Check the LLM is configured, lease the ears' model and the voice. Raises ApiError."""
        self.state.chat.llm.check_configured()
        if not self._requested_model:
            raise ApiError(
                "Name the LLM that answers in the connection's `model`, e.g. "
                "client.realtime.connect(model='llama3.2'): it is passed to CHAT_COMPLETION_BASE_URL.",
                param="model",
                code="missing_model",
            )
        self.config = ConversationConfig(llm_model=self._requested_model)
        await self.ears.start()
        await self._use_voice(self.settings.tts_default_voice, "session.audio.output.voice")
        await self.emit("session.created", session=self._session_object())

    async def ready_for_input(self) -> None:
        await self.ears.ready_for_input()

    async def finish(self) -> None:
        """The session ends: turns in speech are finished, a response under way is cancelled."""
        await self.ears.finish()
        if self._response is not None:
            self._response.cancel("client_cancelled")
        if self._response_task is not None:
            await asyncio.wait([self._response_task])
        await self.items.stop()
        await self.outbox.close()
        self._release_voice()

    def abandon(self) -> None:
        """The client has gone: everything stops now; leases come back once running steps end."""
        self.ears.abandon()
        self._answer_next_turn = False
        if self._response_task is not None:
            self._response_task.cancel()
        self.items.abandon()
        self._release_voice()

    async def emit(self, kind: str, /, **fields: Any) -> None:
        # A copy: items change (a transcript arrives, a truncation) while their event waits in the outbox.
        await self.outbox.put(protocol.server_event(kind, **copy.deepcopy(fields)))

    # --- client events ---

    async def handle(self, raw: dict[str, Any]) -> None:
        event = protocol.parse_event(raw, events.CONVERSATION_CLIENT_EVENTS)
        try:
            if raw["type"] in events.AUDIO_BUFFER_EVENTS:
                await self.ears.handle(raw)
            elif isinstance(event, events.ConversationSessionUpdateEvent):
                await self._update(event, raw)
            elif isinstance(event, events.ResponseCreate):
                await self._create_response(event.response or events.ResponseParameters())
            elif isinstance(event, events.ResponseCancel):
                self._cancel_response(event.response_id)
            elif isinstance(event, events.OutputAudioBufferClear):
                self._barge_in("client_cancelled", cleared_by_client=True)
            else:
                await self.items.handle(event)
        except EventError as error:
            error.event_id = event.event_id
            raise
        except ApiError as error:
            raise EventError(error.message, param=error.param, code=error.code, event_id=event.event_id) from error

    async def _update(self, event: events.ConversationSessionUpdateEvent, raw: dict[str, Any]) -> None:
        assert self.config is not None
        update = event.session
        config = ConversationConfig(**vars(self.config))
        fields = update.model_fields_set
        if update.model:
            config.llm_model = update.model
        if "instructions" in fields:
            config.instructions = update.instructions or ""
        if update.output_modalities:
            config.output_modalities = _one_modality(update.output_modalities)
        if "tools" in fields:
            config.tools = [tool.model_dump(exclude_none=True) for tool in update.tools or ()]
        if update.tool_choice is not None:
            config.tool_choice = _tool_choice(update.tool_choice)
        if update.max_output_tokens is not None:
            config.max_output_tokens = update.max_output_tokens
        if "parallel_tool_calls" in fields:
            config.parallel_tool_calls = update.parallel_tool_calls
        output = update.audio.output if update.audio else None
        if output is not None:
            if output.format is not None:
                config.output = output_format(output.format, "session.audio.output.format")
            if output.speed is not None:
                config.speed = output.speed
        audio_input = raw["session"].get("audio", {}).get("input") if update.audio and update.audio.input else None
        if isinstance(audio_input, dict) and isinstance(audio_input.get("turn_detection"), dict):
            detection = audio_input["turn_detection"]
            config.create_response = detection.get("create_response") is not False
            config.interrupt_response = detection.get("interrupt_response") is not False
        if output is not None and output.voice is not None:
            await self._use_voice(_voice_name(output.voice), "session.audio.output.voice")
        if audio_input is not None or "include" in fields:
            # The ears check and apply the input settings (format, transcription, turn detection) themselves.
            session: dict[str, Any] = {"type": "transcription"}
            if audio_input is not None:
                session["audio"] = {"input": audio_input}
            if "include" in fields:
                session["include"] = raw["session"]["include"]
            await self.ears.handle({"type": "session.update", "event_id": event.event_id, "session": session})
        config.voice = self.config.voice
        self.config = config
        await self.emit("session.updated", session=self._session_object())

    async def _use_voice(self, name: str, param: str) -> None:
        ref = self.state.catalog.voice(name)
        try:
            lease = await self.state.models.acquire(ref)
        except ApiError as error:
            raise EventError(error.message, param=param, code=error.code) from error
        self._release_voice()
        self._voice_lease, self._voice_ref = lease, ref
        assert self.config is not None
        self.config.voice = name

    def _release_voice(self) -> None:
        if self._voice_lease is not None:
            self._voice_lease.release()
            self._voice_lease = None

    # --- responses ---

    async def _create_response(self, parameters: events.ResponseParameters, *, automatic: bool = False) -> None:
        if self._response is not None:
            if automatic:
                self._answer_next_turn = True  # answered once the response under way is done
                return
            raise EventError(
                f"Conversation already has an active response in progress: {self._response.id}. Wait until the "
                "response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        plan, context = self._plan(parameters)
        response = Response(self.state, self.state.chat.llm, plan, self.emit)
        self._response = response
        self._response_task = asyncio.create_task(self._respond(response, context), name=f"realtime {response.id}")

    def _plan(self, parameters: events.ResponseParameters) -> tuple[ResponsePlan, _Context]:
        assert self.config is not None
        config = self.config
        out_of_band = parameters.conversation == "none" or parameters.input is not None
        if parameters.input is not None:
            items = [self.items.normalized(item, transcribe=False) for item in parameters.input]
        else:
            items = self.conversation.items()
        modalities = (
            _one_modality(parameters.output_modalities) if parameters.output_modalities else config.output_modalities
        )
        tools = (
            [tool.model_dump(exclude_none=True) for tool in parameters.tools]
            if parameters.tools is not None
            else config.tools
        )
        body: dict[str, Any] = {"model": config.llm_model, "messages": []}
        if tools:
            body["tools"] = chat_tools(tools)
            choice = _tool_choice(parameters.tool_choice) if parameters.tool_choice else config.tool_choice
            body["tool_choice"] = chat_tool_choice(choice)
        limit = parameters.max_output_tokens if parameters.max_output_tokens is not None else config.max_output_tokens
        if isinstance(limit, int):
            body["max_tokens"] = limit
        parallel = parameters.parallel_tool_calls
        if parallel is None:
            parallel = config.parallel_tool_calls
        if parallel is not None and tools:
            body["parallel_tool_calls"] = parallel
        voice = None
        if "audio" in modalities:
            output = config.output
            requested = parameters.audio.output if parameters.audio and parameters.audio.output else None
            if requested is not None and requested.format is not None:
                output = output_format(requested.format, "response.audio.output.format")
            voice_ref = self._voice_ref
            if requested is not None and requested.voice is not None:
                voice_ref = self.state.catalog.voice(_voice_name(requested.voice))
            voice = VoiceOutput(
                voice_ref, config.speed, output.sample_rate, output.encode, bytes_per_second=output.bytes_per_second
            )
        instructions = parameters.instructions if parameters.instructions is not None else config.instructions
        plan = ResponsePlan(
            body=body,
            voice=voice,
            conversation=None if out_of_band else self.conversation,
            metadata=parameters.metadata,
        )
        return plan, _Context(items, instructions)

    async def _respond(self, response: Response, context: _Context) -> None:
        try:
            # The messages are made once the transcripts of the turns being answered are in.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRANSCRIPT_WAIT_SECONDS):
                    await self.items.transcripts_of(context.items)
            # As they are now: a transcript that arrived meanwhile came in a new copy of its item.
            items = [self.conversation.get(item.get("id", "")) or item for item in context.items]
            response.plan.body["messages"] = chat_messages(items, context.instructions)
            await response.run()
        finally:
            self._response = None
        if self._answer_next_turn and not self.closing:
            self._answer_next_turn = False
            await self._create_response(events.ResponseParameters(), automatic=True)

    def _cancel_response(self, response_id: str | None) -> None:
        response = self._response
        if response is None:
            raise EventError("Cancellation failed: no active response found.", code="response_cancel_not_active")
        if response_id is not None and response_id != response.id:
            raise EventError(
                f"Cancellation failed: the active response is {response.id}, not '{response_id[:100]}'.",
                param="response_id",
                code="response_cancel_not_active",
            )
        response.cancel("client_cancelled")

    def _barge_in(self, reason: str, *, cleared_by_client: bool = False) -> None:
        response = self._response
        if response is None or response.done:
            return
        response.cancel(reason)
        if response.plan.voice is not None or cleared_by_client:
            # Queued behind what is already in the outbox: the client drops what it buffered of the answer.
            event = protocol.server_event("output_audio_buffer.cleared", response_id=response.id)
            task = asyncio.get_running_loop().create_task(self.outbox.put(event))
            self.items.keep(task)

    # --- the ears' events ---

    async def heard(self, event: dict[str, Any]) -> None:
        """An event of the transcription session: relayed into the conversation, and acted on."""
        kind = event["type"]
        if kind in ("session.created", "session.updated"):
            return  # the conversation session's own describe both
        if kind == "input_audio_buffer.committed":
            event["previous_item_id"] = self.conversation.last_id
        elif kind == "conversation.item.added":
            event["previous_item_id"] = self.conversation.add(event["item"])
            self.items.awaiting_transcript(event["item"]["id"])
        elif kind == "conversation.item.done":
            self.conversation.update(event["item"])
        await self.outbox.put(event)
        assert self.config is not None
        if kind == "input_audio_buffer.speech_started" and self.config.interrupt_response:
            self._barge_in("turn_detected")
        elif kind in ("conversation.item.done", "conversation.item.input_audio_transcription.failed"):
            item_id = event["item"]["id"] if kind == "conversation.item.done" else event["item_id"]
            self.items.transcript_ready(item_id)
            if kind == "conversation.item.done" and self._answers_turns and _has_words(event["item"]):
                await self._create_response(events.ResponseParameters(), automatic=True)

    @property
    def _answers_turns(self) -> bool:
        assert self.config is not None
        ears = self.ears.config
        return self.config.create_response and ears is not None and ears.turn_detection is not None

    # --- describing ---

    def _session_object(self) -> dict[str, Any]:
        assert self.config is not None
        config = self.config
        ears = self.ears.config
        assert ears is not None
        detection = ears.turn_detection
        if detection is not None:
            detection = {
                **detection,
                "create_response": config.create_response,
                "interrupt_response": config.interrupt_response,
            }
        return {
            "id": self.session_id,
            "object": "realtime.session",
            "type": "realtime",
            "model": config.llm_model,
            "expires_at": protocol.expires_at(self.settings.live_max_session_seconds),
            "instructions": config.instructions,
            "output_modalities": config.output_modalities,
            "audio": {
                "input": {
                    "format": ears.format,
                    "transcription": {"model": ears.model, "language": ears.language, "prompt": ears.prompt},
                    "turn_detection": detection,
                    "noise_reduction": ears.noise_reduction,
                },
                "output": {"format": config.output.wire, "voice": config.voice, "speed": config.speed},
            },
            "tools": config.tools,
            "tool_choice": config.tool_choice,
            "max_output_tokens": config.max_output_tokens,
            "include": ears.include,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
        }


@dataclass
class _Context:
    """What a response answers: these items, after these instructions."""

    items: list[dict[str, Any]]
    instructions: str


class _Ears(Outbox):
    """The transcription session's outbox, taken over: its events go through the conversation session."""

    def __init__(self, session: ConversationSession) -> None:
        super().__init__(size=1)
        self._session = session

    async def put(self, event: dict[str, Any]) -> None:
        await self._session.heard(event)

    async def close(self) -> None:
        """The ears are done; the conversation session closes the real outbox itself."""


def _one_modality(modalities: list[str]) -> list[str]:
    # The Realtime API answers in text, or in audio with its transcript: both at once means audio.
    if "audio" in modalities:
        return ["audio"]
    return ["text"]


def _tool_choice(choice: Any) -> str | dict[str, Any]:
    return choice.model_dump() if hasattr(choice, "model_dump") else choice


def _voice_name(voice: str | events.VoiceId) -> str:
    return voice.id if isinstance(voice, events.VoiceId) else voice


def _has_words(item: dict[str, Any]) -> bool:
    return any(
        any(char.isalnum() for char in (part.get("transcript") or part.get("text") or ""))
        for part in item.get("content") or ()
    )

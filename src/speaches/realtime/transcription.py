"""Realtime transcription sessions (`WS /v1/realtime?intent=transcription`): turns, VAD, and their transcripts.

The audio stream is cut into *turns*, each of which becomes one conversation item: with server VAD a turn
runs from speech start (less `prefix_padding_ms`) to `silence_duration_ms` after speech stops; without VAD
(turn detection `null`) it is whatever the client appended between two commits. Each turn is transcribed
while it is spoken, by the live session's transcriber (`speaches.live.session`): LocalAgreement-2 confirms
words as two successive transcriptions agree on them, and each confirmed piece goes out at once as a
`conversation.item.input_audio_transcription.delta`. At the turn's end only the tail is left to transcribe,
so `completed` follows `speech_stopped` after one short step.

Bounded: between turns only the last few seconds of audio are kept (for the prefix padding); within a turn
the transcriber keeps its buffer bounded however long the turn, and holds back the receive loop when audio
arrives faster than it is transcribed; at most `MAX_TURNS_IN_FLIGHT` committed turns are still being
finished at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from speaches.config import Settings
from speaches.errors import ApiError
from speaches.inference import InferencePool
from speaches.live.pcm_buffer import PcmBuffer
from speaches.live.session import SAMPLE_RATE, LiveTranscriber
from speaches.models.catalog import Catalog
from speaches.models.manager import Lease, ModelManager
from speaches.realtime import protocol
from speaches.realtime.protocol import EventError
from speaches.realtime.session_config import DEFAULT_VAD, SessionConfig, checked_format, turn_detection_settings
from speaches.realtime.turns import Turn
from speaches.realtime.vad import PAUSE_WINDOWS, WINDOW_SAMPLES, TurnDetector
from speaches.realtime.work import AudioIntake, Intake, Outbox, checked_language, off_loop, realtime_model

logger = logging.getLogger(__name__)

MAX_TURNS_IN_FLIGHT = 4
MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio."""
IDLE_KEEP_SECONDS = 2.0
"""Between turns, this much audio (beyond the prefix padding) is kept for a commit the client makes then."""
SPEECH_END_MARGIN_SAMPLES = SAMPLE_RATE // 10
"""The speech may end a little later than the VAD's last speech window: a step must have heard that too."""


class TranscriptionSession:
    """A transcription session's state and work. The connection calls `start`, then `handle` for each client
    event (after `ready_for_input`), and sends what `outbox` yields; `finish` or `abandon` at the end."""

    def __init__(
        self, settings: Settings, catalog: Catalog, models: ModelManager, pool: InferencePool, *, model: str | None
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.models = models
        self.pool = pool
        self.outbox = Outbox()
        self.session_id = protocol.new_id("sess")
        self._requested_model = model
        self.config: SessionConfig | None = None
        self._lease: Lease[Any] | None = None
        self._intake: AudioIntake | None = None
        self._detector: TurnDetector | None = None
        self._audio = PcmBuffer(initial_seconds=5.0)  # the recent stream, for prefix padding and idle commits
        self._floor = 0  # no turn may reach before this sample: the end of the last turn, commit or clear
        self._vad_origin = 0  # where the VAD's stream began on the session's timeline
        self._turn: Turn | None = None
        self._finishing: deque[Turn] = deque()
        self._previous_item: str | None = None

    closing = False
    """Transcription sessions end only when the client leaves or a time limit is reached."""

    @property
    def received_seconds(self) -> float:
        return self._audio.end / SAMPLE_RATE

    # --- lifecycle ---

    async def start(self) -> None:
        """Lease the default model and announce the session. Raises ApiError (the model cannot be used)."""
        ref = realtime_model(self._requested_model, self.catalog)
        lease = await self.models.acquire(ref)
        self._lease = lease
        language = checked_language(
            None, lease.model.supported_languages, ref, default=self.settings.default_language, param="language"
        )
        self.config = SessionConfig(
            format={"type": "audio/pcm", "rate": 24_000},
            model=self._requested_model or ref.id,
            model_ref=ref,
            language=language,
            prompt="",
            turn_detection=dict(DEFAULT_VAD),
        )
        self._reset_intake()
        await self._announce_session("session.created")

    async def ready_for_input(self) -> None:
        """Wait while the current turn has as much audio waiting as it may (backpressure)."""
        if self._turn is not None:
            await self._turn.transcriber.wait_for_room()

    async def finish(self) -> None:
        """The session ends (idle timeout, time limit): a turn in speech is committed, an uncommitted manual
        buffer is dropped, every committed turn is transcribed to its end, then the outbox closes."""
        if self._turn is not None:
            if self._turn.announced:
                await self._commit(self._turn, stopped_at=self._turn.fed_until)
            else:
                self._cancel(self._turn)
        while self._finishing:
            await self._wait_for(self._finishing[0])
        await self.outbox.close()

    def abandon(self) -> None:
        """The client has gone: stop everything now. Leases come back once steps already running end."""
        for turn in [*self._finishing, *([self._turn] if self._turn else [])]:
            self._cancel(turn)
        self._turn = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    # --- client events ---

    async def handle(self, raw: dict[str, Any]) -> None:
        """Act on one client event. Raises EventError (sent as an `error` event; the session goes on)."""
        if raw.get("type") == "session.update" and _session_type(raw) == "realtime":
            raise EventError(
                "This server runs transcription sessions only: set session.type to 'transcription' "
                "(and connect with ?intent=transcription).",
                param="session.type",
                code="invalid_value",
                event_id=raw.get("event_id") if isinstance(raw.get("event_id"), str) else None,
            )
        event = protocol.parse_event(raw, protocol.TRANSCRIPTION_CLIENT_EVENTS)
        try:
            if isinstance(event, protocol.InputAudioBufferAppend):
                await self._append(event)
            elif isinstance(event, protocol.InputAudioBufferCommit):
                await self._client_commit()
            elif isinstance(event, protocol.InputAudioBufferClear):
                await self._clear()
            elif isinstance(event, protocol.SessionUpdate):
                await self._update(event.session)
        except EventError as error:
            error.event_id = event.event_id
            raise
        except ApiError as error:
            raise EventError(error.message, param=error.param, code=error.code, event_id=event.event_id) from error

    async def _append(self, event: protocol.InputAudioBufferAppend) -> None:
        assert self._intake is not None
        intake = await off_loop(self._intake.take, event.audio)
        await self._route(intake)

    async def _route(self, intake: Intake) -> None:
        """Give the new audio to the turn it belongs to, opening and committing turns where the VAD says."""
        stream_start = self._audio.end
        self._audio.append_samples(intake.samples)
        if self._detector is None:
            if self._turn is None and len(intake.samples):
                await self._open_turn(start=stream_start, announced=False)
        else:
            for boundary in self._detector.push(intake.probabilities, intake.first_window):
                sample = self._vad_origin + boundary.sample  # the VAD counts from where its stream began
                if boundary.kind == "start":
                    padding = self._detector.settings.prefix_padding_samples
                    start = max(sample - padding, self._floor, self._audio.start)
                    turn = await self._open_turn(start=start, announced=True)
                    await self.outbox.put(
                        protocol.server_event(
                            "input_audio_buffer.speech_started",
                            audio_start_ms=_ms(start),
                            item_id=turn.item_id,
                        )
                    )
                elif boundary.kind == "pause" and self._turn is not None:
                    start = self._turn.started_at
                    decided = sample + PAUSE_WINDOWS * WINDOW_SAMPLES  # where the VAD heard the pause
                    self._turn.transcriber.pause_at(sample - start, heard_by=decided - start)
                elif self._turn is not None:
                    self._feed(self._turn, until=sample)
                    await self._commit(self._turn, stopped_at=sample, speech_stopped=True)
            await self._check_idle_timeout()
        if self._turn is not None:
            self._feed(self._turn, until=self._audio.end)
        self._keep_recent_audio()

    async def _client_commit(self) -> None:
        turn = self._turn
        if turn is None and self._detector is not None:
            # No speech in progress: commit what the VAD heard as silence (the last seconds of it).
            start = max(self._floor, self._audio.start)
            if self._audio.end - start >= MIN_COMMIT_SAMPLES:
                turn = await self._open_turn(start=start, announced=False)
                self._feed(turn, until=self._audio.end)
        if turn is None or turn.samples < MIN_COMMIT_SAMPLES:
            held = (turn.samples if turn else 0) / SAMPLE_RATE * 1000
            raise EventError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {held:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        await self._commit(turn, stopped_at=self._audio.end)
        if self._detector is not None:
            self._detector.reset()

    async def _clear(self) -> None:
        if self._turn is not None:
            self._cancel(self._turn)
            self._turn = None
        if self._detector is not None:
            self._detector.reset()
        self._floor = self._audio.end
        self._audio.clear()
        await self.outbox.put(protocol.server_event("input_audio_buffer.cleared"))

    async def _update(self, update: protocol.TranscriptionSessionUpdate) -> None:
        assert self.config is not None
        config = SessionConfig(**vars(self.config))
        lease: Lease[Any] | None = None
        audio_input = update.audio.input if update.audio and update.audio.input else None
        try:
            if audio_input is not None:
                fields = audio_input.model_fields_set
                if "format" in fields:
                    config.format = checked_format(audio_input.format)
                if audio_input.transcription is not None:
                    lease = await self._apply_transcription(config, audio_input.transcription)
                if "turn_detection" in fields:
                    config.turn_detection = turn_detection_settings(audio_input.turn_detection)
                if "noise_reduction" in fields:
                    nr = audio_input.noise_reduction
                    config.noise_reduction = nr.model_dump() if nr is not None else None
            if "include" in update.model_fields_set:
                config.include = list(update.include) if update.include else None
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        if lease is not None:
            assert self._lease is not None
            self._lease.release()
            self._lease = lease
        reset_intake = config.format != self.config.format or (config.turn_detection is None) != (
            self.config.turn_detection is None
        )
        self.config = config
        if reset_intake:
            self._reset_intake()
        elif self._detector is not None and config.vad is not None:
            self._detector.settings = config.vad
        await self._announce_session("session.updated")

    async def _apply_transcription(
        self, config: SessionConfig, settings: protocol.TranscriptionSettings
    ) -> Lease[Any] | None:
        """Fold `transcription` into `config`; a new lease when the model changes. Raises EventError."""
        fields = settings.model_fields_set
        lease: Lease[Any] | None = None
        supported = self._lease.model.supported_languages if self._lease else []
        if "model" in fields and settings.model:
            param = "session.audio.input.transcription.model"
            ref = realtime_model(settings.model, self.catalog, param=param)
            if ref != config.model_ref:
                try:
                    lease = await self.models.acquire(ref)
                except ApiError as error:
                    raise EventError(error.message, param=param, code=error.code) from error
                supported = lease.model.supported_languages
            config.model, config.model_ref = settings.model, ref
        try:
            if "language" in fields:
                config.language = checked_language(
                    settings.language,
                    supported,
                    config.model_ref,
                    default=None,
                    param="session.audio.input.transcription.language",
                )
            elif lease is not None and config.language not in (None, *supported):
                config.language = None
        except EventError:
            if lease is not None:
                lease.release()
            raise
        if "prompt" in fields:
            config.prompt = settings.prompt or ""
        return lease

    # --- turns ---

    async def _open_turn(self, *, start: int, announced: bool) -> Turn:
        assert self.config is not None
        assert self._lease is not None
        while len(self._finishing) >= MAX_TURNS_IN_FLIGHT:
            await self._wait_for(self._finishing[0])
        lease = await self.models.acquire(self.config.model_ref)
        transcriber = LiveTranscriber(
            lease.model,
            self.pool,
            language=self.config.language,
            min_chunk_seconds=self.settings.live_min_chunk_seconds,
            context=self.config.prompt,
        )
        turn = Turn(
            item_id=protocol.new_id("item"),
            transcriber=transcriber,
            lease=lease,
            announced=announced,
            fed_until=start,
            started_at=start,
        )
        turn.previous = self._finishing[-1] if self._finishing else None
        logprobs = self.config.logprobs
        turn.task = asyncio.create_task(turn.transcribe(self.outbox, logprobs=logprobs), name=f"turn {turn.item_id}")
        turn.task.add_done_callback(lambda _task: self._forget(turn))
        self._turn = turn
        return turn

    def _feed(self, turn: Turn, *, until: int) -> None:
        start = max(turn.fed_until, self._audio.start)
        if until > start:
            turn.transcriber.feed_samples(self._audio.samples()[start - self._audio.start : until - self._audio.start])
            turn.fed_until = until

    async def _commit(self, turn: Turn, *, stopped_at: int, speech_stopped: bool = False) -> None:
        """End the turn's audio: the buffer is committed and the turn becomes an item being finished."""
        if speech_stopped:
            await self.outbox.put(
                protocol.server_event(
                    "input_audio_buffer.speech_stopped", audio_end_ms=_ms(stopped_at), item_id=turn.item_id
                )
            )
        self._turn = None
        self._floor = max(self._floor, stopped_at)
        await self.outbox.put(
            protocol.server_event(
                "input_audio_buffer.committed", previous_item_id=self._previous_item, item_id=turn.item_id
            )
        )
        await self.outbox.put(
            protocol.server_event(
                "conversation.item.added",
                previous_item_id=self._previous_item,
                item=protocol.user_audio_item(turn.item_id, None, "in_progress"),
            )
        )
        self._previous_item = turn.item_id
        turn.announced = True
        if turn.held:
            await self.outbox.put(
                turn.delta_event("".join(turn.held), [] if self.config and self.config.logprobs else None)
            )
            turn.held.clear()
        speech_until = None
        if speech_stopped and self._detector is not None:
            # The VAD heard only silence in the turn's last `silence_duration_ms` (a little margin aside).
            silence = self._detector.settings.silence_windows * WINDOW_SAMPLES - SPEECH_END_MARGIN_SAMPLES
            speech_until = max(turn.samples - silence, 0)
        turn.transcriber.end(speech_until=speech_until)
        self._finishing.append(turn)

    async def _wait_for(self, turn: Turn) -> None:
        if turn.task is not None:
            await asyncio.wait([turn.task])

    def _cancel(self, turn: Turn) -> None:
        if turn.task is not None:
            turn.task.cancel()
        # Here, not only in the task's `finally`: a task cancelled before it first ran never runs that.
        turn.give_back()
        self._forget(turn)

    def _forget(self, turn: Turn) -> None:
        with contextlib.suppress(ValueError):
            self._finishing.remove(turn)

    async def _check_idle_timeout(self) -> None:
        """`idle_timeout_ms`: after that much audio without speech, say so and commit the silence as an item."""
        assert self.config is not None
        assert self._detector is not None
        timeout_ms = (self.config.turn_detection or {}).get("idle_timeout_ms")
        if not timeout_ms or self._detector.speaking or self._turn is not None:
            return
        if _ms(self._audio.end - self._floor) < timeout_ms:
            return
        item_id = protocol.new_id("item")
        start, end = self._floor, self._audio.end
        await self.outbox.put(
            protocol.server_event(
                "input_audio_buffer.timeout_triggered",
                audio_start_ms=_ms(start),
                audio_end_ms=_ms(end),
                item_id=item_id,
            )
        )
        # The VAD heard no speech in it, so its transcript is empty; it is not sent to the model.
        for kind, fields in (
            ("input_audio_buffer.committed", {"previous_item_id": self._previous_item, "item_id": item_id}),
            (
                "conversation.item.added",
                {
                    "previous_item_id": self._previous_item,
                    "item": protocol.user_audio_item(item_id, None, "in_progress"),
                },
            ),
            (
                "conversation.item.input_audio_transcription.completed",
                {
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": "",
                    "usage": {"type": "duration", "seconds": round((end - start) / SAMPLE_RATE, 3)},
                },
            ),
            ("conversation.item.done", {"item": protocol.user_audio_item(item_id, "", "completed")}),
        ):
            await self.outbox.put(protocol.server_event(kind, **fields))
        self._previous_item = item_id
        self._floor = end

    # --- helpers ---

    def _reset_intake(self) -> None:
        assert self.config is not None
        vad = self.config.vad
        self._intake = AudioIntake(self.config.input_format, with_vad=vad is not None)
        # The VAD's windows count from the start of its own stream: start that stream here.
        self._audio.clear()
        self._floor = self._audio.end
        self._vad_origin = self._audio.end
        self._detector = TurnDetector(vad) if vad is not None else None
        if self._detector is not None and self._turn is not None and self._turn.announced:
            self._detector.speaking = True  # the open turn ends when the VAD hears silence

    async def _announce_session(self, kind: str) -> None:
        assert self.config is not None
        expires_at = protocol.expires_at(self.settings.live_max_session_seconds)
        await self.outbox.put(
            protocol.server_event(kind, session=self.config.session_object(self.session_id, expires_at))
        )

    def _keep_recent_audio(self) -> None:
        keep = IDLE_KEEP_SECONDS * SAMPLE_RATE
        if self._detector is not None:
            keep += self._detector.settings.prefix_padding_samples
        self._audio.trim_to(min(self._audio.end - round(keep), self._turn.fed_until if self._turn else self._audio.end))


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _session_type(raw: dict[str, Any]) -> object:
    session = raw.get("session")
    return session.get("type") if isinstance(session, dict) else None

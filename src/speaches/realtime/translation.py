"""Realtime translation sessions (`WS /v1/realtime/translations`): speech in any language in, English out.

The audio stream goes to a live transcriber with Whisper's `translate` task (speaches.live.session), whose
LocalAgreement-2 confirms English words while the speaker goes on; each confirmed piece goes out as
`session.output_transcript.delta`. Each finished English sentence is spoken by the server's piper voice
(`TTS_DEFAULT_VOICE`, through speech/piper.py's `synthesize_speech`) and sent as
`session.output_audio.delta` (PCM16, 24 kHz, mono). With `audio.input.transcription` set, a second
transcriber writes the source-language transcript as `session.input_transcript.delta`.

Whisper translates into English only: another `audio.output.language` is refused with an error event.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from speaches.config import Settings
from speaches.errors import ApiError
from speaches.inference import InferencePool, PoolBusyError
from speaches.live.local_agreement import ends_sentence, join_words
from speaches.live.session import BUSY_RETRY_SECONDS, SAMPLE_RATE, LiveTranscriber
from speaches.models.catalog import Catalog, ModelRef
from speaches.models.manager import Lease, ModelManager
from speaches.realtime import protocol
from speaches.realtime.audio_input import InputFormat
from speaches.realtime.protocol import EventError
from speaches.realtime.work import AudioIntake, Outbox, off_loop, realtime_model
from speaches.speech.piper import synthesize_speech

logger = logging.getLogger(__name__)

OUTPUT_SAMPLE_RATE = 24_000
MAX_AUDIO_EVENT_BYTES = OUTPUT_SAMPLE_RATE * 2
"""Speech goes out in events of at most one second of audio."""
MAX_UNSPOKEN_CHARS = 300
"""Translated text that reaches this length without a sentence end is spoken anyway, at a word boundary."""
SPEECH_QUEUE = 8
ENGLISH = frozenset({"en", "eng", "english"})
ELAPSED_STEP_MS = 200


class TranslationSession:
    """A translation session's state and work; driven by the connection like `TranscriptionSession`."""

    def __init__(
        self, settings: Settings, catalog: Catalog, models: ModelManager, pool: InferencePool, *, model: str | None
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.models = models
        self.pool = pool
        self.outbox = Outbox()
        self.session_id = protocol.new_id("sess")
        self.model = model or "whisper-1"
        self._requested_model = model
        self.closing = False
        self._leases: list[Lease[Any]] = []
        self._voice: Lease[Any] | None = None
        self._intake = AudioIntake(InputFormat("pcm16", 24_000), with_vad=False)
        self._translator: LiveTranscriber | None = None
        self._source: LiveTranscriber | None = None
        self._source_model: str | None = None
        self._noise_reduction: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._source_task: asyncio.Task[None] | None = None
        self._source_lease: Lease[Any] | None = None
        self._speech: asyncio.Queue[str | None] = asyncio.Queue(SPEECH_QUEUE)
        self._received = 0

    @property
    def received_seconds(self) -> float:
        return self._received / SAMPLE_RATE

    # --- lifecycle ---

    async def start(self) -> None:
        """Lease the model and the voice, announce the session. Raises ApiError (a model cannot be used)."""
        # Both loads at once: a first session waits for the slower of the two, not their sum.
        ref = realtime_model(self._requested_model, self.catalog)
        loads = await asyncio.gather(
            self._lease(ref),
            self._lease(self.catalog.voice(None)),
            return_exceptions=True,  # both finish (and are kept, for `abandon` to release) before a failure counts
        )
        for outcome in loads:
            if isinstance(outcome, BaseException):
                raise outcome
        lease, self._voice = loads  # type: ignore[assignment]
        if not lease.model.model.is_multilingual:
            raise ApiError(
                f"The model '{ref.id}' knows English only and cannot translate. Name a multilingual "
                "model, such as Systran/faster-whisper-base, in the connection's `model`.",
                param="model",
                code="model_cannot_translate",
            )
        self._translator = self._transcriber(lease, task="translate")
        self._tasks.append(asyncio.create_task(self._translate(), name="realtime translation"))
        self._tasks.append(asyncio.create_task(self._speak(), name="realtime translation speech"))
        await self.outbox.put(protocol.server_event("session.created", session=self._session_object()))

    async def ready_for_input(self) -> None:
        for transcriber in (self._translator, self._source):
            if transcriber is not None:
                await transcriber.wait_for_room()

    async def finish(self) -> None:
        """Flush: translate and speak what was received, then `session.closed` and the end of the outbox."""
        if self.closing:
            return
        self.closing = True
        tail = await off_loop(self._intake.flush)
        self._feed(tail.samples)
        for transcriber in (self._translator, self._source):
            if transcriber is not None:
                transcriber.end()
        await asyncio.wait([*self._tasks, *([self._source_task] if self._source_task else [])])
        await self.outbox.put(protocol.server_event("session.closed"))
        await self.outbox.close()
        self._stop_source()
        self._release_all()

    def abandon(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._stop_source()
        self._release_all()

    def _stop_source(self) -> None:
        if self._source_task is not None:
            self._source_task.cancel()
        if self._source is not None and self._source_lease is not None:
            self._source.after_current_step(self._source_lease.release)
        self._source, self._source_task, self._source_model, self._source_lease = None, None, None, None

    # --- client events ---

    async def handle(self, raw: dict[str, Any]) -> None:
        event = protocol.parse_event(raw, protocol.TRANSLATION_CLIENT_EVENTS)
        try:
            if isinstance(event, protocol.TranslationAppend):
                if self.closing:
                    raise EventError("The session is closing; no more audio is accepted.", code="session_closing")
                intake = await off_loop(self._intake.take, event.audio)
                self._feed(intake.samples)
            elif isinstance(event, protocol.TranslationSessionUpdate):
                await self._update(event.session)
            elif isinstance(event, protocol.TranslationClose):
                await self.finish()
        except EventError as error:
            error.event_id = event.event_id
            raise
        except ApiError as error:
            raise EventError(error.message, param=error.param, code=error.code, event_id=event.event_id) from error

    async def _update(self, update: protocol.TranslationSessionUpdateRequest) -> None:
        audio = update.audio
        if audio is not None and audio.output is not None and audio.output.language is not None:
            language = audio.output.language.strip().lower()
            if language.split("-")[0] not in ENGLISH:
                raise EventError(
                    f"This server translates into English only (Whisper's translate task); "
                    f"'{audio.output.language[:50]}' cannot be reached. Set session.audio.output.language to 'en'.",
                    param="session.audio.output.language",
                    code="unsupported_language",
                )
        if audio is not None and audio.input is not None:
            fields = audio.input.model_fields_set
            if "transcription" in fields:
                await self._set_source_transcription(audio.input.transcription)
            if "noise_reduction" in fields:
                nr = audio.input.noise_reduction
                self._noise_reduction = nr.model_dump() if nr is not None else None
        await self.outbox.put(protocol.server_event("session.updated", session=self._session_object()))

    async def _set_source_transcription(self, transcription: protocol.TranslationInputTranscription | None) -> None:
        if transcription is None:
            self._stop_source()
            return
        if self._source is not None:
            self._source_model = transcription.model
            return
        param = "session.audio.input.transcription.model"
        try:
            lease = await self.models.acquire(realtime_model(transcription.model, self.catalog, param=param))
        except ApiError as error:
            raise EventError(error.message, param=param, code=error.code) from error
        self._source_lease = lease
        self._source = self._transcriber(lease, task="transcribe")
        self._source_model = transcription.model
        self._source_task = asyncio.create_task(
            self._transcribe_source(self._source), name="realtime source transcript"
        )

    # --- work ---

    def _transcriber(self, lease: Lease[Any], *, task: str) -> LiveTranscriber:
        return LiveTranscriber(
            lease.model,
            self.pool,
            task=task,  # type: ignore[arg-type]
            language=None,
            min_chunk_seconds=self.settings.live_min_chunk_seconds,
        )

    def _feed(self, samples: Any) -> None:
        if not len(samples):
            return
        self._received += len(samples)
        for transcriber in (self._translator, self._source):
            if transcriber is not None and not transcriber.ended:
                transcriber.feed_samples(samples)

    async def _translate(self) -> None:
        assert self._translator is not None
        unspoken = ""
        try:
            async for update in self._translator.updates():
                if not update.delta:
                    continue
                await self.outbox.put(
                    protocol.server_event(
                        "session.output_transcript.delta", delta=update.delta, elapsed_ms=self._elapsed_ms()
                    )
                )
                for word in update.words:
                    unspoken += join_words([word], unspoken)
                    if ends_sentence(word.word) or len(unspoken) >= MAX_UNSPOKEN_CHARS:
                        await self._speech.put(unspoken.strip())
                        unspoken = ""
            if unspoken.strip():
                await self._speech.put(unspoken.strip())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._report(error, "translation")
        # The end of the speech: the speaker stops after what is queued.
        await self._speech.put(None)

    async def _transcribe_source(self, transcriber: LiveTranscriber) -> None:
        try:
            async for update in transcriber.updates():
                if update.delta:
                    await self.outbox.put(
                        protocol.server_event(
                            "session.input_transcript.delta", delta=update.delta, elapsed_ms=self._elapsed_ms()
                        )
                    )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._report(error, "source transcription")

    async def _speak(self) -> None:
        assert self._voice is not None
        voice = self._voice.model
        while (text := await self._speech.get()) is not None:
            try:
                async for chunk in self._synthesis(voice, text):
                    for offset in range(0, len(chunk), MAX_AUDIO_EVENT_BYTES):
                        await self.outbox.put(
                            protocol.server_event(
                                "session.output_audio.delta",
                                delta=base64.b64encode(chunk[offset : offset + MAX_AUDIO_EVENT_BYTES]).decode(),
                                sample_rate=OUTPUT_SAMPLE_RATE,
                                channels=1,
                                format="pcm16",
                                elapsed_ms=self._elapsed_ms(),
                            )
                        )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await self._report(error, "speech")

    async def _synthesis(self, voice: Any, text: str) -> Any:
        """The PCM of `text` in pieces, synthesized in the inference pool; a full queue is waited out."""
        delay, longest = BUSY_RETRY_SECONDS
        while True:
            # A lease per utterance, released only once no pool thread touches the voice any more.
            lease = await self.models.acquire(self.catalog.voice(None))
            pieces = self.pool.iterate(
                lambda: synthesize_speech(voice, text, response_format="pcm", sample_rate=OUTPUT_SAMPLE_RATE),
                on_finished=lease.release,
            )
            try:
                async for piece in pieces:
                    yield piece
                return
            except PoolBusyError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
            finally:
                await pieces.aclose()

    async def _report(self, error: Exception, what: str) -> None:
        if not isinstance(error, ApiError):
            logger.exception("realtime %s failed", what)
            error = ApiError(f"The {what} failed on the server; it has been logged.", status_code=500)
        await self.outbox.put(protocol.error_event(error))

    async def _lease(self, ref: ModelRef) -> Lease[Any]:
        lease = await self.models.acquire(ref)
        self._leases.append(lease)
        return lease

    def _release_all(self) -> None:
        """Give the session's leases back once no translation step runs any more."""
        transcribers = [self._translator] if self._translator is not None else []
        leases, self._leases = self._leases, []

        def release() -> None:
            for lease in leases:
                lease.release()

        pending = len(transcribers)
        if pending == 0:
            release()
            return
        remaining = [pending]

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                release()

        for transcriber in transcribers:
            transcriber.after_current_step(one_done)

    def _elapsed_ms(self) -> int:
        return self._received * 1000 // SAMPLE_RATE // ELAPSED_STEP_MS * ELAPSED_STEP_MS

    def _session_object(self) -> dict[str, Any]:
        return {
            "id": self.session_id,
            "type": "translation",
            "model": self.model,
            "expires_at": protocol.expires_at(self.settings.live_max_session_seconds),
            "audio": {
                "input": {
                    "transcription": {"model": self._source_model} if self._source_model else None,
                    "noise_reduction": self._noise_reduction,
                },
                "output": {"language": "en"},
            },
        }

"""faster-whisper adapter: loading whisper models for the model manager, and transcribing with them.

A transcription is a lazy generator of faster-whisper's own `Segment`s, like the library's. It
decodes the upload in windows (`WHISPER__WINDOW_SECONDS`, 5 min by default) and transcribes one
window at a time, so memory holds one window of samples and its features however long the audio
is: decoded 16 kHz float32 alone is 230 MB per hour, and its spectrogram more. Windows end at the
quietest point of their last seconds, so a cut rarely falls inside a word; timestamps are shifted
back to the start of the upload. Everything here blocks: run it in the inference pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from speaches import metrics
from speaches.audio.decoding import WHISPER_SAMPLE_RATE as SAMPLE_RATE
from speaches.config import Settings, WhisperConfig
from speaches.errors import ApiError, InvalidRequestError, ModelLoadError
from speaches.languages import language_for_model
from speaches.models.catalog import Kind, ModelRef
from speaches.models.device import available_cpus, resolve_compute_type, resolve_device, whisper_worker_layout
from speaches.models.manager import LoadedModel, ModelKind
from speaches.models.sources import find_whisper_model
from speaches.transcription.batched import decode_chunks, speech_chunks
from speaches.transcription.logprobs import TokenScores
from speaches.transcription.protocol import Logprob, Task

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment

    from speaches.audio.decoding import AudioSource

logger = logging.getLogger(__name__)

# Whisper decodes 30 s at a time: below this one window gives batched mode nothing to batch.
WHISPER_CHUNK_SECONDS = 30.0
# Where a window may end: the quietest 100 ms frame of its last 10 s.
CUT_SEARCH_SECONDS = 10.0
CUT_FRAME_SECONDS = 0.1
# Whisper's mel spectrogram has 100 frames per second; `seek` counts them.
FRAMES_PER_SECOND = 100


def load_whisper_model(ref: ModelRef, settings: Settings) -> LoadedModel[WhisperModel]:
    """Resolve and load a whisper model (blocking)."""
    # Imported here so an idle server that never transcribes does not pay for CTranslate2.
    from faster_whisper import WhisperModel

    from speaches.transcription.content_window import ContentWindowWhisperModel

    content_windows = settings.whisper.content_windows
    model_class: Callable[..., WhisperModel] = (
        WhisperModel
        if content_windows == "off"
        else functools.partial(ContentWindowWhisperModel, cut_by_default=content_windows == "all")
    )
    resolved = find_whisper_model(ref, settings)
    device = resolve_device(settings.whisper.inference_device)
    compute_type = resolve_compute_type(settings.whisper.compute_type, device)
    layout = whisper_worker_layout(settings.whisper.num_workers, settings.whisper.cpu_threads, device, available_cpus())
    try:
        model = model_class(
            str(resolved.path),
            device=device,
            device_index=settings.whisper.device_index,
            compute_type=compute_type,
            cpu_threads=layout.threads,
            num_workers=layout.workers,
        )
    except ApiError:
        raise
    except Exception as error:  # corrupt or incompatible files: name the model, keep serving
        raise ModelLoadError(ref.id, f"{type(error).__name__}: {error}") from error
    if settings.whisper.max_batch_size > 1:
        batch_model_calls(model, settings.whisper, device=device)
    return LoadedModel(model=model, device=device)


def batch_model_calls(model: WhisperModel, config: WhisperConfig, *, device: str) -> None:
    """Put the model's CTranslate2 calls behind a batching queue (`speaches.transcription.batching`): every
    job using this model, whatever path it takes through faster-whisper, then shares its batches."""
    from speaches.transcription.batching import BatchingWhisper

    tokenizer = model.hf_tokenizer
    model.model = BatchingWhisper(  # type: ignore[assignment]
        model.model,
        max_batch_size=config.max_batch_size,
        wait_seconds=config.batch_wait_ms / 1000,
        sot_id=tokenizer.token_to_id("<|startoftranscript|>"),
        no_timestamps_id=tokenizer.token_to_id("<|notimestamps|>"),
        # On a CPU the encoder is bound by arithmetic and memory, not by calls: 8 windows in one pass took
        # 25-50% longer than 8 passes of one (docs/benchmarks.md). The decoder is where batching pays there.
        merge_encodes=device != "cpu",
    )


def unload_whisper_model(model: WhisperModel) -> None:
    # CTranslate2 frees its weights (host and GPU) here, even while Python references linger.
    model.model.unload_model()


def whisper_model_kind(settings: Settings) -> ModelKind[WhisperModel]:
    return ModelKind(
        name=Kind.STT,
        load=lambda ref: load_whisper_model(ref, settings),
        ttl=lambda: settings.stt_model_ttl,
        unload=unload_whisper_model,
        max_loaded=lambda: settings.stt_max_loaded_models,
        setting="STT_MAX_LOADED_MODELS",
    )


# --- transcribing ---


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """What a request asks of the decoder, in faster-whisper's terms."""

    task: Task = "transcribe"
    language: str | None = None
    """The requested language (a code or an English name, checked against the model's languages);
    None detects it (from the first window)."""
    default_language: str | None = None
    """DEFAULT_LANGUAGE: used when none is requested, where the model knows it."""
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    hotwords: str | None = None
    vad_filter: bool | None = None
    """None: on in batched mode (which needs it), off in sequential mode."""
    timed_segments: bool = False
    """The answer shows segment timings (srt, vtt, verbose_json): decode sequentially. Batched mode
    joins the speech of a window into chunks across pauses (`batched.speech_chunks`), so one of its
    segments can span a cut silence: fine for text, poor for subtitles."""
    vad_parameters: dict[str, float] | None = None
    """faster-whisper `VadOptions` fields for the VAD (`chunking_strategy=server_vad`); None: its defaults."""
    language_hints: tuple[str, ...] = ()
    """`languages[]`: when no language is set, detection picks the likeliest of these."""
    token_logprobs: bool = False
    """Score every token (`include[]=logprobs`, see `logprobs.py`); decodes sequentially."""


def temperature_schedule(start: float) -> list[float]:
    """`start`, then fallbacks up to 1.0 in steps of 0.2, as Whisper retries a window that fails its checks."""
    steps = math.floor((1.0 - start) / 0.2 + 1e-9)
    return [round(start + 0.2 * step, 2) for step in range(steps + 1)]


def decoding_temperatures(start: float, *, fallback: bool) -> list[float]:
    """What sequential decoding may use for a window: `start` alone, so the same request always gives the
    same text, or with `WHISPER__TEMPERATURE_FALLBACK` Whisper's schedule of retries from `start`."""
    return temperature_schedule(start) if fallback else [start]


class Transcription:
    """One upload's transcription. Iterate `segments()` (blocking) for faster-whisper `Segment`s.

    `language` (a code) is known once the first window is decoded, `duration` once the last one is.
    """

    def __init__(
        self,
        audio: AudioSource,
        options: DecodeOptions,
        config: WhisperConfig,
        *,
        model_id: str,
        max_audio_seconds: float | None = None,
    ) -> None:
        self.audio = audio
        self.max_audio_seconds = max_audio_seconds
        self.options = options
        self.config = config
        self.model_id = model_id
        self.language: str | None = None
        self.duration = 0.0
        self.windows = 0
        self.batched_windows = 0
        self._logprobs: dict[int, list[Logprob]] = {}

    def take_logprobs(self, segment_id: int) -> list[Logprob]:
        """The scored tokens of a segment already yielded (with `token_logprobs`), handed over once."""
        return self._logprobs.pop(segment_id, [])

    def segments(self, model: WhisperModel) -> Iterator[Segment]:
        from speaches.audio.decoding import iter_audio_chunks

        started = time.perf_counter()
        options = self.options
        self.language = language_for_model(
            options.language, model.supported_languages, model_id=self.model_id, default=options.default_language
        )
        hints = hinted_languages(options.language_hints, model.supported_languages, model_id=self.model_id)
        if options.language is None and hints:
            # The request's hints outrank DEFAULT_LANGUAGE; several are decided on the first window.
            self.language = hints[0] if len(hints) == 1 else None
        scores = TokenScores(model) if options.token_logprobs else None
        offset_samples = 0
        count = 0
        chunks = iter_audio_chunks(
            self.audio, SAMPLE_RATE, chunk_seconds=WHISPER_CHUNK_SECONDS, max_seconds=self.max_audio_seconds
        )
        windows = split_at_quiet_points(
            chunks,
            window_samples=int(self.config.window_seconds * SAMPLE_RATE),
            search_samples=int(CUT_SEARCH_SECONDS * SAMPLE_RATE),
            frame_samples=int(CUT_FRAME_SECONDS * SAMPLE_RATE),
        )
        with contextlib.closing(chunks), contextlib.closing(windows):
            for window in windows:
                self.windows += 1
                offset = offset_samples / SAMPLE_RATE
                window_end = offset + len(window) / SAMPLE_RATE
                if self.windows == 1 and self.language is None and len(hints) > 1:
                    self.language = likeliest_language(model, window, hints)
                segments = self._transcribe_window(model, window)
                with _closing_if_possible(segments):
                    for segment in segments if scores is None else scores.iterate(segments):
                        count += 1
                        if scores is not None:
                            self._logprobs[count] = scores.take(segment.tokens)
                        yield _shifted(segment, count, offset, window_end, offset_samples)
                offset_samples += len(window)
                self.duration = offset_samples / SAMPLE_RATE
        kind = "translation" if self.options.task == "translate" else "transcription"
        metrics.record_audio_seconds(kind, self.duration)
        logger.info(
            "%s %.1f s of audio (%d window(s), %d batched; %d segment(s)) in %.2f s",
            "translated" if self.options.task == "translate" else "transcribed",
            self.duration,
            self.windows,
            self.batched_windows,
            count,
            time.perf_counter() - started,
        )

    def _uses_batched_mode(self, window: np.ndarray) -> bool:
        # Batched mode needs the VAD to find its chunks; a window of one chunk has nothing to batch;
        # it decodes at temperature 0 only, and its segments may join speech from across pauses.
        options = self.options
        return (
            self.config.use_batched_mode
            and options.vad_filter is not False
            and not options.timed_segments
            and not options.word_timestamps
            and not options.token_logprobs
            and options.temperature == 0
            and len(window) > WHISPER_CHUNK_SECONDS * SAMPLE_RATE
        )

    def _transcribe_window(self, model: WhisperModel, window: np.ndarray) -> Iterable[Segment]:
        if self._uses_batched_mode(window):
            self.batched_windows += 1
            return self._transcribe_batched(model, window)
        options = self.options
        segments, info = model.transcribe(
            window,
            language=self.language,
            task=options.task,
            initial_prompt=options.prompt or None,
            temperature=decoding_temperatures(options.temperature, fallback=self.config.temperature_fallback),
            condition_on_previous_text=self.config.condition_on_previous_text,
            word_timestamps=options.word_timestamps,
            hotwords=options.hotwords or None,
            vad_filter=bool(options.vad_filter),
            # A copy: faster-whisper may edit the dict it is given.
            vad_parameters=dict(options.vad_parameters) if options.vad_parameters else None,
        )
        self._keep_language(info.language)
        return segments

    def _transcribe_batched(self, model: WhisperModel, window: np.ndarray) -> Iterator[Segment]:
        from faster_whisper.tokenizer import Tokenizer

        options = self.options
        chunks = speech_chunks(
            window, max_seconds=self.config.batch_chunk_seconds, vad_parameters=options.vad_parameters
        )
        language = self.language
        if language is None:
            if not model.model.is_multilingual:
                language = "en"
            elif chunks:
                language, _probability, _all = model.detect_language(chunks[0].audio(window))
        self._keep_language(language)
        if not chunks:
            return iter(())
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task=options.task, language=language or "en"
        )
        previous = tokenizer.encode(" " + options.prompt.strip()) if options.prompt and options.prompt.strip() else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=False, hotwords=options.hotwords or None)
        return decode_chunks(model, window, chunks, tokenizer, prompt=prompt, batch_size=self.config.batch_size)

    def _keep_language(self, language: str | None) -> None:
        if self.windows == 1:
            # Later windows keep the first one's language (detected, or the model's own: an English-only
            # model writes English whatever was asked), so one upload has one language.
            self.language = language


def hinted_languages(hints: Iterable[str], supported: Iterable[str], *, model_id: str) -> list[str]:
    """The `languages[]` hints this model knows, in order; 400 naming `languages` when it knows none."""
    hints = list(dict.fromkeys(hints))
    known = set(supported)
    usable = [code for code in hints if code in known]
    if hints and not usable:
        listed = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
        raise InvalidRequestError(
            f"The model '{model_id}' knows none of the languages in 'languages' ({', '.join(hints)}); "
            f"it knows {listed}.",
            param="languages",
            code="unsupported_language",
        )
    return usable


def likeliest_language(model: WhisperModel, window: np.ndarray, hints: list[str]) -> str:
    """Whisper's language detection on the start of `window`, restricted to `hints`."""
    _detected, _probability, ranked = model.detect_language(audio=window)
    return next((code for code, _ in ranked if code in hints), hints[0])


def split_at_quiet_points(
    chunks: Iterable[np.ndarray], *, window_samples: int, search_samples: int, frame_samples: int
) -> Iterator[np.ndarray]:
    """Regroup consecutive sample chunks into windows of at most `window_samples`.

    A window that has audio after it ends in the middle of the quietest `frame_samples` frame of its
    last `search_samples`; the rest carries over to the next window. No window is shorter than
    `search_samples` unless the whole audio is: a sliver of a last window would be all Whisper sees,
    and it invents words for short silences. The windows' concatenation is the chunks'
    concatenation. Memory: one window, the search span and one chunk.
    """
    pending: list[np.ndarray] = []
    pending_samples = 0

    def cut_before(latest_end: int) -> Iterator[np.ndarray]:
        nonlocal pending, pending_samples
        audio = pending[0] if len(pending) == 1 else np.concatenate(pending)
        cut = quietest_cut(audio, window_samples - search_samples, latest_end, frame_samples)
        yield audio[:cut]
        rest = audio[cut:].copy()
        del audio
        pending, pending_samples = [rest], len(rest)

    for chunk in chunks:
        if len(chunk) == 0:
            continue
        pending.append(chunk)
        pending_samples += len(chunk)
        # Cut only once a whole search span follows the window, so the rest is never a sliver.
        while pending_samples > window_samples + search_samples:
            yield from cut_before(window_samples)
    if pending_samples > window_samples:
        yield from cut_before(pending_samples - search_samples)
    if pending_samples:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def quietest_cut(audio: np.ndarray, earliest: int, latest: int, frame_samples: int) -> int:
    """Where to end a window: the middle of the quietest frame between samples `earliest` and `latest`."""
    earliest = max(earliest, 0)
    region = audio[earliest:latest]
    frames = len(region) // frame_samples
    if frames == 0:
        return latest
    energy = np.square(region[: frames * frame_samples].reshape(frames, frame_samples), dtype=np.float64).sum(axis=1)
    # The last quietest frame: in true silence every frame ties, and a later cut keeps windows long.
    quietest = frames - 1 - int(np.argmin(energy[::-1]))
    return earliest + quietest * frame_samples + frame_samples // 2


def _shifted(segment: Segment, segment_id: int, offset: float, window_end: float, offset_samples: int) -> Segment:
    """`segment` with times relative to the upload, not its window, and kept inside the window."""

    def place(seconds: float) -> float:
        return round(min(seconds + offset, window_end), 3)

    words = segment.words
    if words is not None:
        words = [dataclasses.replace(word, start=place(word.start), end=place(word.end)) for word in words]
    return dataclasses.replace(
        segment,
        id=segment_id,
        seek=segment.seek + offset_samples * FRAMES_PER_SECOND // SAMPLE_RATE,
        start=place(segment.start),
        end=place(segment.end),
        words=words,
    )


@contextlib.contextmanager
def _closing_if_possible(iterable: Iterable[Any]) -> Iterator[None]:
    """Close a lazy generator of segments (stopping its decoder) if the consumer leaves early."""
    try:
        yield
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()

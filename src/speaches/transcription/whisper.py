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
import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from speaches import metrics
from speaches.config import Settings, WhisperConfig
from speaches.errors import ApiError, ModelLoadError
from speaches.models.device import resolve_compute_type, resolve_device
from speaches.models.manager import LoadedModel, ModelKind
from speaches.models.sources import check_model_id, find_whisper_model, resolve_stt_alias
from speaches.transcription.protocol import Task

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment

    from speaches.audio import AudioSource

logger = logging.getLogger(__name__)

STT_KIND = "stt"
SAMPLE_RATE = 16_000
# Whisper decodes 30 s at a time: below this one window gives batched mode nothing to batch.
WHISPER_CHUNK_SECONDS = 30.0
# Where a window may end: the quietest 100 ms frame of its last 10 s.
CUT_SEARCH_SECONDS = 10.0
CUT_FRAME_SECONDS = 0.1
# Whisper's mel spectrogram has 100 frames per second; `seek` counts them.
FRAMES_PER_SECOND = 100


def load_whisper_model(model_id: str, settings: Settings) -> LoadedModel[WhisperModel]:
    """Resolve and load a whisper model (blocking). `model_id` is already alias-resolved."""
    # Imported here so an idle server that never transcribes does not pay for CTranslate2.
    from faster_whisper import WhisperModel

    resolved = find_whisper_model(model_id, settings)
    device = resolve_device(settings.whisper.inference_device)
    compute_type = resolve_compute_type(settings.whisper.compute_type, device)
    try:
        model = WhisperModel(
            str(resolved.path),
            device=device,
            device_index=settings.whisper.device_index,
            compute_type=compute_type,
            cpu_threads=settings.whisper.cpu_threads,
            num_workers=settings.whisper.num_workers,
        )
    except ApiError:
        raise
    except Exception as error:  # corrupt or incompatible files: name the model, keep serving
        raise ModelLoadError(model_id, f"{type(error).__name__}: {error}") from error
    return LoadedModel(model=model, device=device)


def unload_whisper_model(model: WhisperModel) -> None:
    # CTranslate2 frees its weights (host and GPU) here, even while Python references linger.
    model.model.unload_model()


def whisper_model_kind(settings: Settings) -> ModelKind[WhisperModel]:
    return ModelKind(
        name=STT_KIND,
        load=lambda model_id: load_whisper_model(model_id, settings),
        ttl=lambda: settings.stt_model_ttl,
        unload=unload_whisper_model,
    )


def stt_model_id(requested: str | None, settings: Settings) -> str:
    """The model a request means: `whisper-1` and an empty name both stand for the default model.

    Ids that could reach outside the model folders are refused here (400), before any work starts.
    """
    model_id = resolve_stt_alias(requested or settings.whisper.model, settings)
    check_model_id(model_id, settings)
    return model_id


# --- transcribing ---


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """What a request asks of the decoder, in faster-whisper's terms."""

    task: Task = "transcribe"
    language: str | None = None
    """A Whisper language code; None detects it (from the first window)."""
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    hotwords: str | None = None
    vad_filter: bool | None = None
    """None: on in batched mode (which needs it), off in sequential mode."""
    timed_segments: bool = False
    """The answer shows segment timings (srt, vtt, verbose_json): decode sequentially. Batched mode
    packs the speech of a window into 30 s chunks across pauses (faster-whisper's VAD chunking), so
    one of its segments can span minutes of silence: fine for text, useless for subtitles."""


def temperature_schedule(start: float) -> list[float]:
    """`start`, then fallbacks up to 1.0 in steps of 0.2, as Whisper retries a window that fails its checks."""
    steps = math.floor((1.0 - start) / 0.2 + 1e-9)
    return [round(start + 0.2 * step, 2) for step in range(steps + 1)]


class Transcription:
    """One upload's transcription. Iterate `segments()` (blocking) for faster-whisper `Segment`s.

    `language` (a code) is known once the first window is decoded, `duration` once the last one is.
    """

    def __init__(self, model: WhisperModel, audio: AudioSource, options: DecodeOptions, config: WhisperConfig) -> None:
        self.model = model
        self.audio = audio
        self.options = options
        self.config = config
        self.language: str | None = options.language
        self.duration = 0.0
        self.windows = 0
        self.batched_windows = 0

    def segments(self) -> Iterator[Segment]:
        from speaches.audio import iter_audio_chunks

        started = time.perf_counter()
        offset_samples = 0
        count = 0
        chunks = iter_audio_chunks(self.audio, SAMPLE_RATE, chunk_seconds=WHISPER_CHUNK_SECONDS)
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
                segments = self._transcribe_window(window)
                with _closing_if_possible(segments):
                    for segment in segments:
                        count += 1
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
        # Batched mode splits audio with the VAD and decodes the chunks side by side: it needs the
        # VAD, and a window of one chunk has nothing to batch (and would lose temperature fallback).
        return (
            self.config.use_batched_mode
            and self.options.vad_filter is not False
            and not self.options.timed_segments
            and len(window) > WHISPER_CHUNK_SECONDS * SAMPLE_RATE
        )

    def _transcribe_window(self, window: np.ndarray) -> Iterable[Segment]:
        options = self.options
        common: dict[str, Any] = {
            "language": self.language,
            "task": options.task,
            "initial_prompt": options.prompt or None,
            "temperature": temperature_schedule(options.temperature),
            "word_timestamps": options.word_timestamps,
            "hotwords": options.hotwords or None,
        }
        if self._uses_batched_mode(window):
            from faster_whisper import BatchedInferencePipeline

            self.batched_windows += 1
            segments, info = BatchedInferencePipeline(self.model).transcribe(
                window, vad_filter=True, batch_size=self.config.batch_size, **common
            )
        else:
            segments, info = self.model.transcribe(window, vad_filter=bool(options.vad_filter), **common)
        if self.windows == 1:
            # Later windows keep the first one's language (detected, or the model's own: an English-only
            # model writes English whatever was asked), so one upload has one language.
            self.language = info.language
        return segments


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

"""Decoding: any upload to mono float32 samples (16 kHz for Whisper), in-process through PyAV.

There is no ffmpeg subprocess. Everything here is blocking CPU work: call it from a worker thread,
never from the event loop.

- :func:`decode_audio` turns a path, a binary file object or bytes into float32 mono samples in
  [-1, 1] at the requested rate (16 kHz by default, what Whisper expects).
- :func:`iter_audio_chunks` is the same decode, yielded in bounded chunks for arbitrarily long audio.
- Every problem with the upload itself is an :class:`AudioDecodeError` (a 400 with ``param="file"``).
- ``max_seconds`` bounds how much audio a decode produces (:class:`AudioTooLongError`, a 413): a file
  that declares a longer duration is refused when it is opened, before any sample is decoded, and one
  that does not say (or says less than it holds) is refused the moment its decoded audio passes the limit.
  A truncated or partly corrupt file gives the audio that could be decoded, as a media player would;
  only a file where nothing decodes is an error.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Final, TypeAlias

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from speaches.errors import ApiError, InvalidRequestError

logger = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE: Final = 16_000

# A path, the bytes of a file, or a binary file object such as the SpooledTemporaryFile behind an upload.
AudioSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

# What OpenAI's clients say the transcription endpoints accept; PyAV reads many more.
_FORMATS_HINT: Final = "supported formats include flac, m4a, mp3, mp4, mpeg, mpga, ogg, opus, wav and webm"

# The pre-sized decode buffer trusts a file's claimed duration only up to this much; a longer file
# still decodes, the buffer grows. A forged header cannot make us reserve gigabytes up front.
_MAX_PRESIZED_SECONDS: Final = 600.0


class AudioDecodeError(InvalidRequestError):
    """The uploaded audio could not be decoded; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="file")


class AudioTooLongError(ApiError):
    """413: the audio is longer than MAX_AUDIO_SECONDS."""

    def __init__(self, max_seconds: float, declared_seconds: float | None = None) -> None:
        found = f"it is {declared_seconds:,.0f} s long" if declared_seconds is not None else "it is longer"
        super().__init__(
            f"The uploaded audio is too long: {found}, and this server transcribes at most {max_seconds:,.0f} s "
            "(MAX_AUDIO_SECONDS) in one request. Split it into shorter parts.",
            status_code=413,
            param="file",
            code="audio_too_long",
        )


# FFmpeg failures that say nothing about the upload: out of memory, or our own Python file object
# raising while PyAV read from it. They must stay server errors, not become a 400.
_SERVER_SIDE_FAILURES: Final = (av.error.MemoryError, av.error.PyAVCallbackError)


def decode_audio(
    source: AudioSource, sample_rate: int = WHISPER_SAMPLE_RATE, *, max_seconds: float | None = None
) -> np.ndarray:
    """Decode ``source`` to float32 mono samples in [-1, 1] at ``sample_rate``.

    ``source`` is a path, the bytes of a file, or a binary file object (read from its start; it is
    left open). Any container and codec FFmpeg reads works. Multi-channel audio is mixed down,
    other rates are resampled. Decoding is frame by frame into one buffer sized from the duration
    the file declares, so memory holds the input and one copy of the output.

    Raises :class:`AudioDecodeError` when the upload is empty, is not audio, has no audio track, or
    nothing in it decodes; :class:`AudioTooLongError` past ``max_seconds``.
    """
    _check_sample_rate(sample_rate)
    with _open_audio(source, max_seconds) as (container, stream):
        declared = _declared_duration_seconds(container, stream)
        presized_seconds = min(declared, _MAX_PRESIZED_SECONDS) if declared else 30.0
        buffer = _GrowableSampleBuffer(int(presized_seconds * 1.01 * sample_rate) + sample_rate)
        for samples in _iter_mono_samples(container, stream, sample_rate, max_seconds):
            buffer.append(samples)
        return buffer.result()


def iter_audio_chunks(
    source: AudioSource,
    sample_rate: int = WHISPER_SAMPLE_RATE,
    chunk_seconds: float = 30.0,
    *,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode like :func:`decode_audio`, yielding consecutive chunks of ``chunk_seconds`` each.

    Every chunk but the last holds exactly ``round(chunk_seconds * sample_rate)`` samples; their
    concatenation equals :func:`decode_audio`'s result. Memory stays bounded by one chunk plus one
    decoded frame, whatever the length of the audio.

    This is a generator: the file is opened, and :class:`AudioDecodeError` raised, on the first
    ``next()``. Close the generator (or exhaust it) to release the decoder early.
    """
    _check_sample_rate(sample_rate)
    chunk_size = round(chunk_seconds * sample_rate)
    if chunk_size < 1:
        raise ValueError(f"chunk_seconds must give at least one sample, got {chunk_seconds}")
    with _open_audio(source, max_seconds) as (container, stream):
        chunk = np.empty(chunk_size, dtype=np.float32)
        filled = 0
        for samples in _iter_mono_samples(container, stream, sample_rate, max_seconds):
            consumed = 0
            while consumed < len(samples):
                taken = min(chunk_size - filled, len(samples) - consumed)
                chunk[filled : filled + taken] = samples[consumed : consumed + taken]
                filled += taken
                consumed += taken
                if filled == chunk_size:
                    yield chunk
                    chunk = np.empty(chunk_size, dtype=np.float32)
                    filled = 0
        if filled:
            yield chunk[:filled].copy()


def audio_duration_seconds(samples: np.ndarray, sample_rate: int = WHISPER_SAMPLE_RATE) -> float:
    """Duration of mono ``samples`` at ``sample_rate``, in seconds."""
    return len(samples) / sample_rate


def _check_sample_rate(sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")


@contextmanager
def _open_audio(source: AudioSource, max_seconds: float | None) -> Iterator[tuple[InputContainer, AudioStream]]:
    """Open ``source`` and pick its audio stream, turning every upload problem into AudioDecodeError.

    A file that declares more than ``max_seconds`` is refused here, before anything is decoded."""
    if isinstance(source, str | os.PathLike):
        # A path comes from the server itself; a missing file is our bug, so FileNotFoundError stays.
        path = os.fspath(source)
        if os.path.getsize(path) == 0:
            raise AudioDecodeError("The uploaded file is empty.")
        target: str | IO[bytes] = path
    elif isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioDecodeError("The uploaded file is empty.")
        target = io.BytesIO(source)
    else:
        if _is_seekable(source):
            source.seek(0, os.SEEK_END)
            size = source.tell()
            source.seek(0)
            if size == 0:
                raise AudioDecodeError("The uploaded file is empty.")
        target = source

    try:
        # metadata_errors="ignore": a tag in a broken text encoding must not cost the user the audio.
        container = av.open(target, mode="r", metadata_errors="ignore")
    except _SERVER_SIDE_FAILURES:
        raise
    except av.error.FFmpegError as error:
        # InvalidDataError (no demuxer recognises it), EOFError (cut inside the header) and kin.
        logger.debug("av.open failed: %s", error)
        raise AudioDecodeError(
            "The uploaded file could not be decoded as audio: it is not in a format this server reads, "
            f"or it is truncated or corrupt; {_FORMATS_HINT}."
        ) from error

    with container:
        stream = container.streams.best("audio")
        if stream is None:
            raise AudioDecodeError(_describe_missing_audio(container))
        if stream.codec_context is None:
            raise AudioDecodeError(
                f"The uploaded file's audio uses a codec this server cannot decode; {_FORMATS_HINT}."
            )
        declared = _declared_duration_seconds(container, stream)
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise AudioTooLongError(max_seconds, declared)
        yield container, stream


def _is_seekable(file: IO[bytes]) -> bool:
    seekable = getattr(file, "seekable", None)
    return bool(seekable()) if seekable is not None else hasattr(file, "seek") and hasattr(file, "tell")


def _describe_missing_audio(container: InputContainer) -> str:
    kinds = sorted({stream.type for stream in container.streams})
    found = f" (it contains only {' and '.join(kinds)})" if kinds else ""
    return f"The uploaded file has no audio track{found}. Upload a file with an audio track; {_FORMATS_HINT}."


def _declared_duration_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    """How long the file says it is, if it says; many streams (raw, streamed, broken) do not."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _iter_frames(container: InputContainer, stream: AudioStream) -> Iterator[AudioFrame]:
    """Decoded frames of ``stream``, skipping packets that fail and stopping where the data ends.

    A packet the decoder rejects is skipped (as FFmpeg's own tools do), and demuxing errors end the
    stream: together they make a truncated or partly corrupt file give what it holds.
    """
    packets = container.demux(stream)
    failed_packets = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            # The demuxer's last packets are empty ones that flush the decoder: the tail is out.
            break
        except _SERVER_SIDE_FAILURES:
            raise
        except av.error.FFmpegError as error:
            logger.warning("audio upload ends in unreadable data, keeping what came before: %s", error)
            yield from _flush_decoder(stream)
            break
        try:
            frames = stream.decode(packet)
        except _SERVER_SIDE_FAILURES:
            raise
        except av.error.FFmpegError as error:
            failed_packets += 1
            logger.debug("skipping an undecodable packet: %s", error)
            continue
        yield from frames
    if failed_packets:
        logger.warning("skipped %d undecodable packet(s) in an audio upload", failed_packets)


def _flush_decoder(stream: AudioStream) -> list[AudioFrame]:
    try:
        return stream.decode(None)
    except _SERVER_SIDE_FAILURES:
        raise
    except av.error.FFmpegError:
        return []


@dataclass(frozen=True)
class _FrameShape:
    """What a resampler is configured for; a frame that differs needs a new resampler."""

    sample_format: str
    layout: str
    sample_rate: int

    @classmethod
    def of(cls, frame: AudioFrame) -> _FrameShape:
        return cls(frame.format.name, frame.layout.name, frame.sample_rate)


def _mono_float_resampler(sample_rate: int) -> AudioResampler:
    # rematrix_maxval=1 keeps a downmix within [-1, 1]: without it FFmpeg mixes stereo to mono as
    # 0.707 * (L + R) for float output, which pushes a loud recording past full scale.
    return AudioResampler(format="flt", layout="mono", rate=sample_rate, options={"rematrix_maxval": "1.0"})


def _iter_mono_samples(
    container: InputContainer, stream: AudioStream, sample_rate: int, max_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Float32 mono arrays at ``sample_rate``, one per converted frame, in order; AudioTooLongError once
    they add up to more than ``max_seconds``.

    The arrays may be views of frame buffers; consumers copy what they keep.
    """
    resampler: AudioResampler | None = None
    resampler_input: _FrameShape | None = None
    produced_any = False
    produced = 0
    max_samples = None if max_seconds is None else int(max_seconds * sample_rate)

    def converted(frames: list[AudioFrame]) -> Iterator[np.ndarray]:
        nonlocal produced_any, produced
        for frame in frames:
            # When the input already has the target format, layout and rate, PyAV's resampler hands
            # back the decoded frame itself, so the clipping below may write into it; nothing else reads it.
            if frame.samples == 0:
                continue
            samples = frame.to_ndarray()[0]
            # Float sources (float wav, some decoders) can overshoot full scale; callers get [-1, 1].
            np.clip(samples, -1.0, 1.0, out=samples)
            produced_any = True
            produced += len(samples)
            if max_samples is not None and produced > max_samples:
                assert max_seconds is not None
                raise AudioTooLongError(max_seconds)
            yield samples

    try:
        for frame in _iter_frames(container, stream):
            if frame.samples == 0:
                continue
            # Timestamps are irrelevant to a sample-exact decode and are often missing (None) or
            # broken in uploads; without them the resampler works on samples alone.
            frame.pts = None
            shape = _FrameShape.of(frame)
            if resampler is None or shape != resampler_input:
                # Some streams change rate or channel layout mid-way (chained ogg, concatenated mp3).
                if resampler is not None:
                    yield from converted(resampler.resample(None))
                resampler = _mono_float_resampler(sample_rate)
                resampler_input = shape
            yield from converted(resampler.resample(frame))
        if resampler is not None:
            yield from converted(resampler.resample(None))
    except _SERVER_SIDE_FAILURES:
        raise
    except av.error.FFmpegError as error:
        # The decoder produced frames FFmpeg's own filters refuse (an unsupported channel layout, say).
        raise AudioDecodeError(
            f"The audio in the uploaded file could not be converted to mono {sample_rate} Hz: {error}"
        ) from error

    if not produced_any:
        raise AudioDecodeError(
            "The uploaded file has an audio track, but none of it could be decoded; the file may be "
            "truncated or corrupt."
        )


class _GrowableSampleBuffer:
    """One float32 array filled in place, doubled when a file turns out longer than it declared."""

    def __init__(self, capacity: int) -> None:
        self._samples = np.empty(max(capacity, 1), dtype=np.float32)
        self._length = 0

    def append(self, samples: np.ndarray) -> None:
        needed = self._length + len(samples)
        if needed > len(self._samples):
            grown = np.empty(max(needed, 2 * len(self._samples)), dtype=np.float32)
            grown[: self._length] = self._samples[: self._length]
            self._samples = grown
        self._samples[self._length : needed] = samples
        self._length = needed

    def result(self) -> np.ndarray:
        # A slice view would pin the whole allocation; copy only when the slack is worth freeing.
        if len(self._samples) - self._length > max(self._length // 8, 16_000):
            return self._samples[: self._length].copy()
        return self._samples[: self._length]

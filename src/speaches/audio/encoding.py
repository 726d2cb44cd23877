"""Encoding: synthesized speech to any of OpenAI's response formats, chunk by chunk, through PyAV.

- :class:`AudioEncoder` takes successive chunks of mono samples and returns encoded bytes as they
  become ready, in any of OpenAI's response formats (:data:`SPEECH_RESPONSE_FORMATS`).
- :func:`content_type_for` gives the HTTP media type of each format.

Everything here is blocking CPU work: call it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, Literal, TypeAlias, get_args

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import OutputContainer

from speaches.errors import InvalidRequestError

SpeechResponseFormat: TypeAlias = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_RESPONSE_FORMATS: Final[tuple[SpeechResponseFormat, ...]] = get_args(SpeechResponseFormat)

_CONTENT_TYPES: Final[dict[str, str]] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def content_type_for(response_format: str) -> str:
    """The HTTP Content-Type of a speech response in ``response_format``."""
    try:
        return _CONTENT_TYPES[response_format]
    except KeyError:
        raise _unsupported_format(response_format) from None


def _unsupported_format(response_format: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Unsupported response_format '{response_format}'; choose one of {', '.join(SPEECH_RESPONSE_FORMATS)}.",
        param="response_format",
    )


@dataclass(frozen=True)
class _CodecSetup:
    """How one compressed response format is produced with FFmpeg."""

    muxer: str
    codec: str
    bit_rate: int | None
    muxer_options: dict[str, str] = field(default_factory=dict)
    codec_options: dict[str, str] = field(default_factory=dict)


# Bit rates suit mono speech. flush_packets makes the muxer hand every packet to our sink at once
# instead of filling a 32 KiB I/O buffer first, which is what makes the formats stream.
_CODEC_SETUPS: Final[dict[str, _CodecSetup]] = {
    # No ID3 tag: the stream is bare MPEG frames, so chunks can be concatenated and played as they come.
    # LAME's quality 7 ("fast") encodes 14 s of speech in 61 ms instead of 102 ms (measured), which
    # keeps whole-paragraph mp3 synthesis near raw piper's time; at 64 kb/s mono speech sounds the same.
    "mp3": _CodecSetup(
        "mp3", "libmp3lame", 64_000, {"id3v2_version": "0", "flush_packets": "1"}, {"compression_level": "7"}
    ),
    # Ogg pages normally close once a second; 100 ms pages let the first audio out sooner, at a few
    # hundred bytes per second of page headers.
    "opus": _CodecSetup("ogg", "libopus", 32_000, {"page_duration": "100000", "flush_packets": "1"}),
    "aac": _CodecSetup("adts", "aac", 64_000, {"flush_packets": "1"}),
    # No 8 KiB padding block (room for later tag edits): nobody edits a speech response in place.
    "flac": _CodecSetup("flac", "flac", None, {"metadata_header_padding": "0", "flush_packets": "1"}),
}

# Nothing in these formats depends on the total length, so they always stream. wav and flac carry
# the total in their header and are written whole at finish(); wav alone streams when asked.
_ALWAYS_STREAMED: Final = frozenset({"mp3", "opus", "aac", "pcm"})

# The RIFF and data sizes of a wav streamed before its length is known.
_WAV_UNKNOWN_SIZE: Final = 0xFFFFFFFF


def supported_output_sample_rate(response_format: str, requested: int) -> int:
    """The rate :class:`AudioEncoder` will actually produce for ``requested`` in ``response_format``.

    Codecs with a fixed set of rates get the nearest valid rate at or above ``requested`` (so no
    bandwidth is lost), or their highest rate when ``requested`` exceeds them all: opus takes 8, 12,
    16, 24 or 48 kHz, so 22050 becomes 24000; mp3 takes the MPEG rates 8000 to 48000; aac 7350 to
    96000. flac, wav and pcm take any positive rate.
    """
    if response_format not in _CONTENT_TYPES:
        raise _unsupported_format(response_format)
    if requested <= 0:
        raise ValueError(f"sample rate must be positive, got {requested}")
    setup = _CODEC_SETUPS.get(response_format)
    if setup is None:
        return requested
    valid_rates = av.Codec(setup.codec, "w").audio_rates
    if not valid_rates:
        return requested
    at_or_above = [rate for rate in valid_rates if rate >= requested]
    return min(at_or_above) if at_or_above else max(valid_rates)


class AudioEncoder:
    """Encode successive chunks of mono speech into one response in an OpenAI response format.

    ``encode(samples)`` takes int16 or float32 (in [-1, 1]) mono samples at ``input_sample_rate``
    and returns the encoded bytes ready so far; ``finish()`` flushes the codec and returns the rest.
    The concatenation of everything returned is the complete file. Samples are resampled to
    ``output_sample_rate`` (default: the input rate), adjusted to the nearest rate the codec accepts
    (see :func:`supported_output_sample_rate`); the rate actually produced is
    :attr:`output_sample_rate`.

    Formats:

    - ``mp3`` (MPEG audio frames, no ID3 tag), ``opus`` (Opus in Ogg), ``aac`` (ADTS) and ``pcm``
      (raw signed 16-bit little-endian mono, no header) always stream, whatever ``streamable`` says:
      bytes come out from the first chunk on, a little behind because of codec frame sizes and Ogg
      pages.
    - ``wav`` (16-bit PCM): by default (``streamable=False``) the whole file is returned by
      ``finish()`` with exact RIFF and data sizes. With ``streamable=True`` the 44-byte header comes
      out first, before the length is known, with both sizes set to 0xFFFFFFFF, the convention for
      "unknown length, read to the end" that FFmpeg itself writes when it cannot seek back.
      FFmpeg/PyAV and Python's ``wave`` module read such a file to its real end; a reader that
      trusts the sizes would instead report about 4 GiB, which is why it is not the default. Sizes
      of 0 were rejected: strict readers take them literally and see an empty file.
    - ``flac``: always returned whole by ``finish()``, whatever ``streamable`` says, with a complete
      STREAMINFO block (total samples and MD5). A streamed flac would have to say 0 total samples
      ("unknown", which the FLAC specification allows), and libsndfile, so Python's ``soundfile`` and
      everything built on it, cannot read such a file whole ("array is too big").

    Encoding is blocking CPU work: run it in a worker thread. An instance is not thread-safe; use it
    from one thread at a time. Use it as a context manager, or call :meth:`close`, to release the
    codec when a response is abandoned before :meth:`finish`.
    """

    def __init__(
        self,
        response_format: str,
        input_sample_rate: int,
        output_sample_rate: int | None = None,
        *,
        streamable: bool = False,
    ) -> None:
        if input_sample_rate <= 0:
            raise ValueError(f"input_sample_rate must be positive, got {input_sample_rate}")
        self.response_format = response_format
        self.content_type = content_type_for(response_format)
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = supported_output_sample_rate(response_format, output_sample_rate or input_sample_rate)
        self.streamable = response_format in _ALWAYS_STREAMED or (streamable and response_format == "wav")
        self._samples_in = 0
        self._finished = False
        self._backend: _PcmBackend | _ContainerBackend
        if response_format in ("pcm", "wav"):
            self._backend = _PcmBackend(self.output_sample_rate)
        else:
            self._backend = _ContainerBackend(_CODEC_SETUPS[response_format], self.output_sample_rate, self.streamable)
        self._wav_header_sent = False
        # A non-streamed wav keeps its body here until finish(), when its length, and so its header, is known.
        self._wav_body: list[bytes] = []

    def encode(self, samples: np.ndarray) -> bytes:
        """Feed the next chunk of mono samples; return the encoded bytes that are ready now."""
        if self._finished:
            raise RuntimeError("AudioEncoder.encode() called after finish() or close()")
        frame = self._to_frame(samples)
        if frame is None:
            return b""
        encoded = self._backend.encode(frame)
        return self._wrap(encoded, final=False)

    def finish(self) -> bytes:
        """Flush the codec and return the last bytes (for flac and non-streamed wav: the whole file)."""
        if self._finished:
            raise RuntimeError("AudioEncoder.finish() called twice or after close()")
        self._finished = True
        encoded = self._backend.finish()
        return self._wrap(encoded, final=True)

    def close(self) -> None:
        """Release the codec without producing the rest of the output. Safe to call more than once."""
        self._finished = True
        self._backend.close()

    def __enter__(self) -> AudioEncoder:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def _to_frame(self, samples: np.ndarray) -> AudioFrame | None:
        samples = np.asarray(samples)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples (a 1-D array), got shape {samples.shape}")
        if samples.dtype == np.int16:
            sample_format = "s16"
        elif np.issubdtype(samples.dtype, np.floating):
            sample_format = "flt"
            samples = samples.astype(np.float32, copy=False)
        else:
            raise TypeError(f"expected int16 or float32 samples, got {samples.dtype}")
        if len(samples) == 0:
            return None
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format=sample_format, layout="mono"
        )
        frame.sample_rate = self.input_sample_rate
        frame.time_base = Fraction(1, self.input_sample_rate)
        frame.pts = self._samples_in
        self._samples_in += len(samples)
        return frame

    def _wrap(self, encoded: bytes, *, final: bool) -> bytes:
        """Put the wav header on PCM bytes: up front when streaming, else around the whole body at the end."""
        if self.response_format != "wav":
            return encoded
        if self.streamable:
            if self._wav_header_sent:
                return encoded
            self._wav_header_sent = True
            return _wav_header(self.output_sample_rate, None) + encoded
        self._wav_body.append(encoded)
        if not final:
            return b""
        body = b"".join(self._wav_body)
        self._wav_body.clear()
        return _wav_header(self.output_sample_rate, len(body)) + body


def _wav_header(sample_rate: int, data_size: int | None) -> bytes:
    """The 44-byte RIFF header of 16-bit mono PCM; sizes are 0xFFFFFFFF when ``data_size`` is unknown."""
    channels, bytes_per_sample = 1, 2
    if data_size is None:
        riff_size = data_size = _WAV_UNKNOWN_SIZE
    else:
        riff_size = 36 + data_size
        if riff_size > _WAV_UNKNOWN_SIZE - 1:
            raise ValueError("wav cannot hold more than 4 GiB of audio")
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,  # size of the PCM fmt chunk
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * channels * bytes_per_sample,  # byte rate
        channels * bytes_per_sample,  # block align
        8 * bytes_per_sample,
        b"data",
        data_size,
    )


class _PcmBackend:
    """16-bit little-endian PCM bytes (the body of pcm and wav), resampled by PyAV when needed."""

    def __init__(self, output_sample_rate: int) -> None:
        self._resampler = AudioResampler(format="s16", layout="mono", rate=output_sample_rate)

    def encode(self, frame: AudioFrame) -> bytes:
        return self._to_bytes(self._resampler.resample(frame))

    def finish(self) -> bytes:
        return self._to_bytes(self._resampler.resample(None))

    def close(self) -> None:
        pass

    @staticmethod
    def _to_bytes(frames: list[AudioFrame]) -> bytes:
        # int16 input already at the output rate passes through the resampler untouched.
        return b"".join(frame.to_ndarray()[0].astype("<i2", copy=False).tobytes() for frame in frames)


class _ByteSink:
    """A write-only, non-seekable file for FFmpeg's muxer; collects what it writes until drained.

    Being non-seekable is deliberate: it tells the muxers not to go back and patch headers (mp3's
    Xing frame, flac's STREAMINFO), so every byte written is final and can go to the client at once.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class _ContainerBackend:
    """A PyAV output container (mp3, ogg/opus, adts/aac, flac) writing into memory.

    Input frames go to the codec context at the input rate; PyAV's encoder resamples them through its
    AudioResampler to the codec's sample format, rate and frame size.
    """

    def __init__(self, setup: _CodecSetup, output_sample_rate: int, streamable: bool) -> None:
        # A seekable BytesIO lets the muxer rewrite the header at the end (flac's total samples and MD5).
        self._sink: _ByteSink | io.BytesIO = _ByteSink() if streamable else io.BytesIO()
        self._container: OutputContainer = av.open(
            self._sink, mode="w", format=setup.muxer, container_options=setup.muxer_options
        )
        try:
            self._stream: AudioStream = self._container.add_stream(setup.codec, rate=output_sample_rate, layout="mono")
            if setup.bit_rate is not None:
                self._stream.codec_context.bit_rate = setup.bit_rate
            if setup.codec_options:
                self._stream.codec_context.options = setup.codec_options
        except BaseException:
            self._container.close()
            raise
        self._closed = False

    def encode(self, frame: AudioFrame) -> bytes:
        self._container.mux(self._stream.encode(frame))
        return self._drain()

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        # Writes the header if no audio ever came, so even an empty response is a valid file.
        self._container.start_encoding()
        self._closed = True
        self._container.close()  # writes the trailer
        if isinstance(self._sink, io.BytesIO):
            return self._sink.getvalue()
        return self._drain()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()

    def _drain(self) -> bytes:
        return self._sink.drain() if isinstance(self._sink, _ByteSink) else b""

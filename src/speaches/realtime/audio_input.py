"""Realtime input audio to what Whisper hears: 16 kHz mono float32, decoded as it streams in.

Clients send PCM16 at 24 kHz (the Realtime API's default; other rates are accepted too) or G.711 μ-law /
A-law at 8 kHz (telephony). G.711 is a fixed mapping of each byte to one 16-bit sample (ITU-T G.711), so it
is decoded with a 256-entry table; the resampling to 16 kHz is libswresample's (through PyAV), which keeps
its filter state between chunks so a stream cut into appends of any size resamples as one signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

SAMPLE_RATE = 16_000
"""What Whisper and the VAD take."""

InputEncoding = Literal["pcm16", "pcmu", "pcma"]


def _mu_law_table() -> np.ndarray:
    # ITU-T G.711 μ-law: the byte is stored inverted; 3 bits of segment, 4 of mantissa, a bias of 0x84.
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((codes & 0x0F) << 3) + 0x84) << ((codes & 0x70) >> 4)
    return np.where(codes & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _a_law_table() -> np.ndarray:
    # ITU-T G.711 A-law: even bits inverted (XOR 0x55); segment 0 is linear, each later one doubles.
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = (codes & 0x0F) << 4
    segment = (codes & 0x70) >> 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


MU_LAW_TO_PCM16 = _mu_law_table()
A_LAW_TO_PCM16 = _a_law_table()


def decode_g711(data: bytes, encoding: Literal["pcmu", "pcma"]) -> np.ndarray:
    """G.711 bytes to int16 samples (one sample per byte)."""
    table = MU_LAW_TO_PCM16 if encoding == "pcmu" else A_LAW_TO_PCM16
    return table[np.frombuffer(data, dtype=np.uint8)]


@dataclass(frozen=True)
class InputFormat:
    encoding: InputEncoding
    sample_rate: int


class InputDecoder:
    """One session's input stream: bytes of `InputFormat` in, 16 kHz float32 samples out.

    Not thread-safe: feed one chunk at a time (the session decodes its appends in order, in a worker thread).
    """

    def __init__(self, input_format: InputFormat) -> None:
        self.format = input_format
        self._odd_byte = b""
        self._resampler: av.AudioResampler | None = None
        if input_format.sample_rate != SAMPLE_RATE:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def decode(self, data: bytes) -> np.ndarray:
        """The 16 kHz samples this chunk completes (the resampler may hold a few back until the next)."""
        return self._resample(self._to_pcm16(data))

    def flush(self) -> np.ndarray:
        """Whatever the resampler still holds, at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return _joined(frame.to_ndarray()[0] for frame in self._resampler.resample(None))

    def _to_pcm16(self, data: bytes) -> np.ndarray:
        if self.format.encoding != "pcm16":
            return decode_g711(data, self.format.encoding)
        if self._odd_byte:
            data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        return np.frombuffer(data, dtype="<i2", count=whole // 2)

    def _resample(self, pcm16: np.ndarray) -> np.ndarray:
        if len(pcm16) == 0:
            return np.zeros(0, dtype=np.float32)
        if self._resampler is None:
            return pcm16.astype(np.float32) * (1.0 / 32768.0)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm16, dtype=np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = self.format.sample_rate
        return _joined(out.to_ndarray()[0] for out in self._resampler.resample(frame))


def _joined(chunks: object) -> np.ndarray:
    parts = list(chunks)  # type: ignore[call-overload]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)

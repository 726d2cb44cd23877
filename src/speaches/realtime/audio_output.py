"""Realtime output audio: the session's `audio.output.format` for what piper speaks.

`audio/pcm` is PCM16 at 24 kHz (the only rate the Realtime API has for output). `audio/pcmu` and `audio/pcma`
are G.711 at 8 kHz (telephony): piper's speech is resampled to 8 kHz by the speech encoder, then each sample
is mapped to the G.711 code whose value (by the decoding tables of audio_input.py, ITU-T G.711) is nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from speaches.realtime.audio_input import A_LAW_TO_PCM16, MU_LAW_TO_PCM16
from speaches.realtime.protocol import AudioFormat, EventError

PCM_OUTPUT_RATE = 24_000
G711_RATE = 8_000


def _encoding_table(decoded: np.ndarray) -> np.ndarray:
    """For every int16 value, the code whose decoded value is nearest: a 65536-entry lookup table."""
    order = np.argsort(decoded, kind="stable")
    values = decoded[order].astype(np.int32)
    samples = np.arange(-32768, 32768, dtype=np.int32)
    above = np.clip(np.searchsorted(values, samples), 1, len(values) - 1)
    below = above - 1
    nearer_below = (samples - values[below]) <= (values[above] - samples)
    return order[np.where(nearer_below, below, above)].astype(np.uint8)


PCM16_TO_MU_LAW = _encoding_table(MU_LAW_TO_PCM16)
PCM16_TO_A_LAW = _encoding_table(A_LAW_TO_PCM16)


def encode_g711(pcm16: bytes, table: np.ndarray) -> bytes:
    """PCM16 little-endian bytes to G.711 bytes (one per sample)."""
    samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.int32) + 32768
    return table[samples].tobytes()


@dataclass(frozen=True)
class OutputFormat:
    wire: dict[str, Any]
    """As the session shows it: `{"type": "audio/pcm", "rate": 24000}` or `{"type": "audio/pcmu"}`."""
    sample_rate: int
    bytes_per_second: int
    encode: Callable[[bytes], bytes] | None


def output_format(requested: AudioFormat | None, param: str) -> OutputFormat:
    """The output format a client asks for. Raises EventError for a rate the API does not have."""
    if requested is None or requested.type == "audio/pcm":
        if requested is not None and requested.rate not in (None, PCM_OUTPUT_RATE):
            raise EventError(
                f"Output audio/pcm is 24000 Hz only; rate {requested.rate} is not possible.",
                param=f"{param}.rate",
                code="invalid_value",
            )
        return OutputFormat({"type": "audio/pcm", "rate": PCM_OUTPUT_RATE}, PCM_OUTPUT_RATE, 2 * PCM_OUTPUT_RATE, None)
    if requested.rate not in (None, G711_RATE):
        raise EventError(
            f"{requested.type} is G.711 at 8000 Hz; rate {requested.rate} is not possible.",
            param=f"{param}.rate",
            code="invalid_value",
        )
    table = PCM16_TO_MU_LAW if requested.type == "audio/pcmu" else PCM16_TO_A_LAW
    return OutputFormat({"type": requested.type}, G711_RATE, G711_RATE, lambda pcm: encode_g711(pcm, table))

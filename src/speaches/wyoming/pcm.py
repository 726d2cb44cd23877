"""The raw PCM a Wyoming client streams, gathered into a WAV file for the server's one audio decoder.

Wyoming sends audio as `audio-chunk` events of raw PCM in the format its `audio-start` declared
(Home Assistant: 16 kHz, 16-bit, mono). Wrapping it in a WAV header lets transcription decode and
resample it exactly like an upload. The first MiB stays in memory (a voice command is ~100 KB), the
rest spills to a temporary file written from a worker thread, so a long stream costs disk, not
memory, and never blocks the event loop; the total is capped like an HTTP upload.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
from dataclasses import dataclass
from typing import IO

from speaches.errors import ApiError, InvalidRequestError

IN_MEMORY_BYTES = 1024 * 1024
_WAV_HEADER_BYTES = 44
# A WAV file's sizes are 32-bit.
_WAV_MAX_DATA_BYTES = 2**32 - 1 - _WAV_HEADER_BYTES
SUPPORTED_WIDTHS = (2, 3, 4)


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    width: int
    """Bytes per sample: 2, 3 or 4 (signed little-endian integers)."""
    channels: int

    @classmethod
    def from_event_data(cls, data: dict[str, object]) -> PcmFormat:
        """The format an `audio-start` or `audio-chunk` declares; 400 when it is missing or unusable."""
        rate, width, channels = (_integer(data, key) for key in ("rate", "width", "channels"))
        if not 1000 <= rate <= 384_000:
            raise InvalidRequestError(f"Unsupported audio rate {rate} Hz: use 1000 to 384000.", param="rate")
        if width not in SUPPORTED_WIDTHS:
            raise InvalidRequestError(
                f"Unsupported audio width {width}: send 16-, 24- or 32-bit signed PCM (width 2, 3 or 4).",
                param="width",
            )
        if not 1 <= channels <= 8:
            raise InvalidRequestError(f"Unsupported channel count {channels}: use 1 to 8.", param="channels")
        return cls(rate, width, channels)

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.width * self.channels


def _integer(data: dict[str, object], key: str) -> int:
    value = data.get(key)
    if value is None:
        raise InvalidRequestError(f"The audio event has no '{key}'.", param=key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequestError(f"The audio event's '{key}' must be an integer.", param=key)
    return value


class AudioTooLongError(ApiError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"The audio stream is longer than the server accepts ({limit_bytes} bytes, MAX_UPLOAD_BYTES). "
            "Send a shorter recording.",
            status_code=413,
            param="audio",
            code="audio_too_long",
        )


class PcmSpool:
    """One request's PCM as a WAV file. Append with :meth:`append`; :meth:`wav_file` hands it over once."""

    def __init__(self, pcm_format: PcmFormat, max_bytes: int) -> None:
        self.format = pcm_format
        self.max_bytes = min(max_bytes, _WAV_MAX_DATA_BYTES)
        self.data_bytes = 0
        self._file: IO[bytes] | None = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115
        self._file.write(b"\0" * _WAV_HEADER_BYTES)  # the real header is written once the size is known

    @property
    def seconds(self) -> float:
        return self.data_bytes / self.format.bytes_per_second

    async def append(self, pcm: bytes) -> None:
        if self._file is None:
            raise RuntimeError("the spool was already handed over")
        if self.data_bytes + len(pcm) > self.max_bytes:
            raise AudioTooLongError(self.max_bytes)
        if self.data_bytes + len(pcm) + _WAV_HEADER_BYTES > IN_MEMORY_BYTES:
            # Past the in-memory part the write goes to (or first rolls over to) a disk file.
            await asyncio.to_thread(self._file.write, pcm)
        else:
            self._file.write(pcm)
        self.data_bytes += len(pcm)

    def wav_file(self) -> IO[bytes]:
        """The complete WAV file, positioned at its start; the caller closes it."""
        if self._file is None:
            raise RuntimeError("the spool was already handed over")
        file, self._file = self._file, None
        # The payload is whole samples only: a trailing partial sample would shift nothing but confuse decoders.
        whole = self.data_bytes - self.data_bytes % (self.format.width * self.format.channels)
        file.seek(0)
        file.write(wav_header(self.format, whole))
        file.seek(0)
        return file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def wav_header(pcm_format: PcmFormat, data_bytes: int) -> bytes:
    """A canonical 44-byte header for `data_bytes` of signed little-endian integer PCM."""
    block_align = pcm_format.width * pcm_format.channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        pcm_format.channels,
        pcm_format.rate,
        pcm_format.rate * block_align,
        block_align,
        pcm_format.width * 8,
        b"data",
        data_bytes,
    )

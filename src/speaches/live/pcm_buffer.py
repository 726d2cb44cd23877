"""The audio a live session has not confirmed yet, on the session's timeline."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
"""What the client sends and Whisper hears: 16 kHz mono."""
BYTES_PER_SAMPLE = 2


class PcmBuffer:
    """The session's unconfirmed audio as float32 samples, fed with int16 little-endian PCM frames.

    Positions are absolute sample indexes on the session's timeline (sample 0 is the first one received):
    the buffer holds samples `start` to `end`. Each frame is converted once, straight into a preallocated
    array; `trim_to` only moves `start`. When the array's end is reached, the live samples move into a new
    array (of the same size if they fill at most half of it, else twice their size), so appending costs
    amortised O(frame) and the array stays within twice the most live audio the buffer held.

    `samples()` returns the live samples without a copy. The view never changes afterwards, even while more
    frames arrive: appends write only past its end, and growing allocates a new array rather than moving
    samples inside the old one (which the view keeps alive). So a worker thread may read it while the event
    loop keeps appending.
    """

    def __init__(self, initial_seconds: float = 20.0) -> None:
        self._initial_capacity = round(initial_seconds * SAMPLE_RATE)
        self._array = np.empty(self._initial_capacity, dtype=np.float32)
        self._head = 0  # array index of the sample at `start`
        self._tail = 0  # array index just past the newest sample
        self._start = 0
        # A frame may end in the middle of a sample; its first byte waits here for the next frame.
        self._odd_byte = b""

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still buffered."""
        return self._start

    @property
    def end(self) -> int:
        """Absolute index just past the newest sample: every whole sample received so far."""
        return self._start + (self._tail - self._head)

    def __len__(self) -> int:
        return self._tail - self._head

    @property
    def capacity(self) -> int:
        return len(self._array)

    def append(self, pcm: bytes) -> None:
        """Add a frame of int16 little-endian samples; an odd trailing byte is kept for the next frame."""
        if self._odd_byte:
            pcm = self._odd_byte + pcm
        whole = len(pcm) - len(pcm) % BYTES_PER_SAMPLE
        self._odd_byte = pcm[whole:]
        if whole == 0:
            return
        incoming = np.frombuffer(pcm, dtype="<i2", count=whole // BYTES_PER_SAMPLE)
        target = self._claim(len(incoming))
        target[:] = incoming
        target *= 1.0 / 32768.0

    def append_samples(self, samples: np.ndarray) -> None:
        """Add float32 samples in [-1, 1] (audio another decoder already converted)."""
        if len(samples):
            self._claim(len(samples))[:] = samples

    def samples(self, until: int | None = None) -> np.ndarray:
        """The buffered samples (up to absolute index `until`), read-only and stable (see the class docstring)."""
        tail = self._tail if until is None else self._head + min(max(until - self._start, 0), len(self))
        view = self._array[self._head : tail]
        view.flags.writeable = False
        return view

    def trim_to(self, position: int) -> None:
        """Drop every sample before absolute index `position` (clamped to what is buffered)."""
        drop = min(max(position - self._start, 0), len(self))
        self._head += drop
        self._start += drop

    def clear(self) -> None:
        """Drop everything buffered; the timeline keeps its place."""
        self.trim_to(self.end)
        self._odd_byte = b""

    def _claim(self, count: int) -> np.ndarray:
        """Room for `count` new samples at the end, counted as received."""
        if self._tail + count > len(self._array):
            live = len(self)
            # A new array either way (see the class docstring): the same size while the live samples fill at
            # most half of it, else twice what they need.
            needed = live + count
            size = len(self._array) if 2 * needed <= len(self._array) else max(self._initial_capacity, 2 * needed)
            grown = np.empty(size, dtype=np.float32)
            grown[:live] = self._array[self._head : self._tail]
            self._array = grown
            self._head = 0
            self._tail = live
        target = self._array[self._tail : self._tail + count]
        self._tail += count
        return target

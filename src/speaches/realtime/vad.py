"""Server VAD: where speech starts and stops in a stream, with the Silero model faster-whisper ships.

`SpeechProbabilities` runs the model over a stream chunk by chunk, carrying its recurrent state and the
64-sample context from one 512-sample window to the next, so its probabilities equal those of one run
over the whole audio (faster-whisper's own VAD filter). `TurnDetector` turns those probabilities into
turn boundaries with the Realtime API's `server_vad` settings. Both are plain objects: the session feeds
them in order (the probabilities in a worker thread, the detector on the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

WINDOW_SAMPLES = 512
"""Silero's window at 16 kHz: 32 ms."""
CONTEXT_SAMPLES = 64
MIN_SPEECH_WINDOWS = 3
"""Speech must last about 100 ms before a turn starts: a click or a cough does not open one."""
NEGATIVE_THRESHOLD_MARGIN = 0.15
"""As in faster-whisper: once speaking, a window counts as silence only below threshold minus this."""
PAUSE_WINDOWS = 8
"""A silence of about 250 ms inside a turn is a pause: the words before it are complete (see `Boundary`)."""


class SpeechProbabilities:
    """Silero speech probabilities for a 16 kHz stream, one per complete 512-sample window."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model  # onnxruntime only when a session uses server VAD

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.windows = 0
        """Windows scored so far: window i covers samples [512 i, 512 (i + 1)) of the stream."""

    def process(self, samples: np.ndarray) -> np.ndarray:
        """The probabilities of the windows that `samples` completes (float32, possibly none)."""
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        count = len(audio) // WINDOW_SAMPLES
        self._pending = audio[count * WINDOW_SAMPLES :].astype(np.float32, copy=True)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: count * WINDOW_SAMPLES].astype(np.float32, copy=False).reshape(count, WINDOW_SAMPLES)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT_SAMPLES:]])
        probabilities, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([contexts, windows], axis=1), "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT_SAMPLES:].copy()
        self.windows += count
        return np.asarray(probabilities, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @property
    def prefix_padding_samples(self) -> int:
        return round(self.prefix_padding_ms * 16)

    @property
    def silence_windows(self) -> int:
        return max(1, round(self.silence_duration_ms * 16 / WINDOW_SAMPLES))


@dataclass(frozen=True)
class Boundary:
    kind: Literal["start", "pause", "stop"]
    sample: int
    """Where on the stream: the first speech window's start; for a pause (a silence of `PAUSE_WINDOWS`
    within the turn, shorter than `silence_duration_ms`) where the silence began; for a stop the end of the
    window that completed the silence (so a turn's audio includes `silence_duration_ms` of trailing
    silence, as OpenAI's does)."""


class TurnDetector:
    """Speech starts after `MIN_SPEECH_WINDOWS` windows at or over the threshold, and stops after
    `silence_duration_ms` of windows below the threshold minus `NEGATIVE_THRESHOLD_MARGIN`."""

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self.speaking = False
        self._speech_run = 0
        self._silence_run = 0

    def push(self, probabilities: np.ndarray, first_window: int) -> list[Boundary]:
        """Boundaries in these windows (`first_window` is the stream index of the first one)."""
        boundaries: list[Boundary] = []
        threshold = self.settings.threshold
        negative = max(threshold - NEGATIVE_THRESHOLD_MARGIN, 0.01)
        for offset, probability in enumerate(probabilities.tolist()):
            window = first_window + offset
            if not self.speaking:
                self._speech_run = self._speech_run + 1 if probability >= threshold else 0
                if self._speech_run >= MIN_SPEECH_WINDOWS:
                    self.speaking = True
                    self._silence_run = 0
                    boundaries.append(Boundary("start", (window - self._speech_run + 1) * WINDOW_SAMPLES))
            else:
                self._silence_run = self._silence_run + 1 if probability < negative else 0
                if self._silence_run == PAUSE_WINDOWS < self.settings.silence_windows:
                    boundaries.append(Boundary("pause", (window - PAUSE_WINDOWS + 1) * WINDOW_SAMPLES))
                if self._silence_run >= self.settings.silence_windows:
                    self.speaking = False
                    self._speech_run = 0
                    boundaries.append(Boundary("stop", (window + 1) * WINDOW_SAMPLES))
        return boundaries

    def reset(self) -> None:
        """Forget any speech in progress (after a commit or clear of the buffer)."""
        self.speaking = False
        self._speech_run = 0
        self._silence_run = 0

"""Encoding a short window as its audio, not as 30 s of mostly padding.

Whisper hears 30 s at a time, and faster-whisper pads every shorter window (a live step's buffer, an 11 s
upload, the last window of a long one) with zero frames up to 3000 before the encoder runs. On a CPU the
encoder pass is most of a short window's cost: 0.33 s for tiny.en at one thread, whatever the audio's
length, against 0.04 s for the 10 s of audio alone (docs/benchmarks.md). CTranslate2's encoder takes any
even number of frames up to 3000, and the decoder, the word alignment and the language detection all work
on the shorter output as they do on the full one.

A window is cut where its padding begins plus `TAIL_FRAMES`, rounded up to 5 s (`ROUND_FRAMES`), and never below
`MIN_FRAMES`. Both matter: with no padding at all Whisper does not hear the audio end, and was seen to repeat
its last sentence until the token limit (base on jfk, and on the 0.3 s that closes a 30.3 s file); with a
second of it, buffers of 0.6-3 s still looped ("And so and so and so ...", "s s s s"), tiny.en on 9 of 24
of them. From 10 s up none of those did, and the shared clips came out as with the full window, bar
punctuation and the word cut at a buffer's end, for both bundled models and both tasks.

Where it applies is `WHISPER__CONTENT_WINDOWS`: `off` (the default), `live` (a live session's steps while speech
goes on; see `speaches.live.hearing`) or `all`. A block of code asks for one or the other with `content_windows()`
or `full_windows()`; elsewhere the model's own default holds. Off by default: a 20 s live buffer that ended inside
a word still looped, 148 short utterances got 1.1% more word errors (tiny.en), an upload repeated its last
sentence, and the test suite, run with it on everywhere, found tiny.en mishearing a short synthesized sentence
and confirming "Thank you." after a live session's last word (docs/benchmarks.md#content-windows).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

TAIL_FRAMES = 100
"""Padding frames kept after the audio (1 s): where Whisper hears that the audio has ended."""
MIN_FRAMES = 1000
"""The shortest window encoded (10 s): shorter ones, with a second or two of audio, send Whisper into loops."""
ROUND_FRAMES = 500
"""Windows are cut to whole 5 s (10, 15, ... 30 s): calls share a batch only when their windows have the same
shape (`batch_calls.py`), so the cut trades a little encoder work for companions (a live step's buffer of
2-20 s falls in one of four lengths, most of batched mode's chunks in the full 30 s)."""


_CONTENT_WINDOWS: contextvars.ContextVar[bool | None] = contextvars.ContextVar("content_windows", default=None)
"""Whether windows are cut in this block (this thread): True, False, or None for the model's own default."""


@contextlib.contextmanager
def _windows(cut: bool) -> Iterator[None]:
    token = _CONTENT_WINDOWS.set(cut)
    try:
        yield
    finally:
        _CONTENT_WINDOWS.reset(token)


def full_windows() -> contextlib.AbstractContextManager[None]:
    """Within this block (in this thread), windows are encoded at Whisper's full 30 s.

    For a hearing that is taken on its own say, where the audio ends in silence: a live step at a pause or at
    the end of the stream. There a content window made tiny.en write "country. Thank you." into jfk's last
    half second of silence, in every one of six runs, and the full window did not.
    """
    return _windows(False)


def content_windows() -> contextlib.AbstractContextManager[None]:
    """Within this block (in this thread), a model that can cut its windows (`ContentWindowWhisperModel`) does."""
    return _windows(True)


def cuts_windows(model: object) -> bool:
    """Whether `model.encode`, called here and now, would cut its windows to their audio."""
    if not isinstance(model, ContentWindowWhisperModel):
        return False
    wanted = _CONTENT_WINDOWS.get()
    return model.cut_by_default if wanted is None else wanted


def trim_window_padding(features: np.ndarray) -> np.ndarray:
    """`features` (frames last, one window or a batch) without the padding frames past the latest audio of any
    window but `TAIL_FRAMES`, in whole `ROUND_FRAMES` and at least `MIN_FRAMES`; unchanged when nothing would go.
    (Whether to cut at all is the caller's: `cuts_windows`.)

    Padding is told apart by its value: faster-whisper pads with zeros, while a frame of audio, even of digital
    silence, is never zero in every mel band (log-mel values are normalised to about -1.5 ... 1.5 and floored
    8 decades below the loudest).
    """
    frames = features.shape[-1]
    bands = tuple(range(features.ndim - 1))
    # Scanned from the end: a window's padding is its tail.
    heard = np.flatnonzero(np.any(features[..., ::-1] != 0, axis=bands))
    audio_frames = frames - int(heard[0]) if len(heard) else 0
    keep = max(MIN_FRAMES, -(-(audio_frames + TAIL_FRAMES) // ROUND_FRAMES) * ROUND_FRAMES)
    return features if keep >= frames else features[..., :keep]


class ContentWindowWhisperModel(WhisperModel):
    """faster-whisper's model, able to encode each window as its audio and a second of padding
    (`trim_window_padding`): by default when `cut_by_default` (`WHISPER__CONTENT_WINDOWS=all`), else only inside
    `content_windows()`.

    Every path through faster-whisper (sequential and batched transcription, language detection) encodes
    through `encode`, so this is the one place the cut is made.
    """

    def __init__(self, *args: Any, cut_by_default: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cut_by_default = cut_by_default

    def encode(self, features: np.ndarray) -> Any:
        return super().encode(encoder_input(self, features))


def encoder_input(model: WhisperModel, features: np.ndarray) -> np.ndarray:
    """What `model.encode` would encode of `features` here and now: for a caller that runs the encoder window by
    window over one batch, whose outputs must all have the batch's shape (it then encodes inside `full_windows`)."""
    return trim_window_padding(features) if cuts_windows(model) else features

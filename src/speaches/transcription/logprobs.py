"""Per-token log probabilities of a transcript, from the whisper decoder itself (`include[]=logprobs`).

CTranslate2 hands faster-whisper one total score per sequence under beam search (its per-step
`return_logits_vocab` works for greedy search only), and faster-whisper keeps only a segment's
average. The tokens' own probabilities are recovered the way faster-whisper recovers word
probabilities: one teacher-forced decoder pass over the chosen tokens, CTranslate2's
`Whisper.align`, whose `text_token_probs` are P(token | audio, prompt, the tokens before it). The
pass is conditioned on the prompt the decoder was given for that window (previous text, hotwords,
the initial prompt), so each figure is the decoder's probability of the token it chose, in the
context it chose it, over the text vocabulary (timestamp tokens are not scored).

How it hooks in: :func:`enable_token_scoring` wraps a loaded model's CTranslate2 `Whisper`, once, in a
proxy whose `generate` also scores what it generated, but only on a thread where a
:class:`TokenScores` is recording; every other call passes straight through at no cost.
faster-whisper then cuts each generated sequence into segments, and :meth:`TokenScores.take` finds
each segment's tokens in the sequence they came from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from speaches.errors import InvalidRequestError
from speaches.transcription.protocol import Logprob

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Whisper's decoder has 448 positions; a forced pass longer than that fails.
MAX_DECODER_POSITIONS = 448
# Mel frames in one 30 s window; only the attention half of `align` uses it.
WINDOW_FRAMES = 3000
# log(0) is -inf, which JSON cannot carry; float32's smallest positive value stands in for it.
_SMALLEST_PROBABILITY = 1e-45

_recording = threading.local()
_enabling = threading.Lock()


def enable_token_scoring(model: WhisperModel) -> None:
    """Let :class:`TokenScores` see the tokens `model` generates. Idempotent and thread-safe: the first
    request that wants logprobs wraps the model, in place, for everyone."""
    with _enabling:
        if not isinstance(model.model, _ScoringWhisper):
            model.model = _ScoringWhisper(model.model, _SpecialTokens.of(model))


@dataclass(frozen=True)
class _SpecialTokens:
    sot_prev: int
    sot: int
    eot: int
    no_timestamps: int

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @classmethod
    def of(cls, model: WhisperModel) -> _SpecialTokens:
        def token_id(token: str) -> int:
            found = model.hf_tokenizer.token_to_id(token)
            if found is None:
                raise ValueError(f"the whisper tokenizer has no {token}")
            return int(found)

        return cls(
            sot_prev=token_id("<|startofprev|>"),
            sot=token_id("<|startoftranscript|>"),
            eot=token_id("<|endoftext|>"),
            no_timestamps=token_id("<|notimestamps|>"),
        )


@dataclass
class _Scored:
    """One generated sequence, with the probability of each of its text tokens (by position)."""

    tokens: list[int]
    probabilities: dict[int, float]
    consumed: int = 0
    """Segments come out of a sequence in order: where the next one is searched from."""


class _ScoringWhisper:
    """A CTranslate2 `Whisper` that also scores the tokens it generates for a recording thread."""

    def __init__(self, inner: Any, special: _SpecialTokens) -> None:
        self._inner = inner
        self._special = special

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, features: Any, prompts: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        results = self._inner.generate(features, prompts, *args, **kwargs)
        recorder: TokenScores | None = getattr(_recording, "scores", None)
        # Batched decoding (several windows at once) is not scored; requests that want logprobs decode sequentially.
        if recorder is not None and len(prompts) == 1 and results:
            tokens = list(results[0].sequences_ids[0])
            recorder.add(_Scored(tokens, self._score(features, list(prompts[0]), tokens)))
        return results

    def _score(self, features: Any, prompt: list[int], tokens: list[int]) -> dict[int, float]:
        special = self._special
        positions = [index for index, token in enumerate(tokens) if token < special.eot]
        if not positions:
            return {}
        text = [tokens[index] for index in positions]
        start = self._start_sequence(prompt, len(text))
        try:
            aligned = self._inner.align(features, start, [text], WINDOW_FRAMES)[0]
        except RuntimeError as error:
            if "alignment_heads" not in str(error):
                raise
            # Old conversions lack the heads `align` needs (word timestamps fail on them too).
            raise InvalidRequestError(
                "This model cannot score its tokens: its CTranslate2 conversion lists no alignment heads. "
                "Leave out include[]=logprobs, or convert the model with a recent ctranslate2.",
                param="include",
            ) from error
        return dict(zip(positions, aligned.text_token_probs, strict=True))

    def _start_sequence(self, prompt: list[int], text_length: int) -> list[int]:
        """The prompt as `align` wants it: no timestamp marks (it adds `<|notimestamps|>` itself), and
        short enough that the forced pass (start, marker, text, end) fits the decoder."""
        special = self._special
        start = [token for token in prompt if token != special.no_timestamps and token < special.timestamp_begin]
        excess = len(start) + text_length + 2 - MAX_DECODER_POSITIONS
        if excess > 0 and start and start[0] == special.sot_prev and special.sot in start:
            # Drop the oldest previous text, as faster-whisper itself keeps only the latest.
            previous_end = start.index(special.sot)
            start = [start[0], *start[1 + min(excess, previous_end - 1) : previous_end], *start[previous_end:]]
        return start


class TokenScores:
    """The scored sequences of one transcription, and the tokens of its segments as OpenAI `Logprob`s.

    Blocking, like the decoding it observes; use it from the thread that drives the segments.
    """

    _KEPT = 8
    """Sequences kept: one window's temperature fallbacks (at most 6) and a little slack."""

    def __init__(self, model: WhisperModel) -> None:
        enable_token_scoring(model)
        self._tokenizer = model.hf_tokenizer
        self._eot = _SpecialTokens.of(model).eot
        self._scored: list[_Scored] = []

    def add(self, scored: _Scored) -> None:
        self._scored.append(scored)
        del self._scored[: -self._KEPT]

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        previous = getattr(_recording, "scores", None)
        _recording.scores = self
        try:
            yield
        finally:
            _recording.scores = previous

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """`items` (faster-whisper's lazy segments), with every step that may decode recorded."""
        iterator = iter(items)
        while True:
            with self.recording():
                item = next(iterator, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def take(self, segment_tokens: list[int]) -> list[Logprob]:
        """The text tokens of a segment just decoded, in order, with their log probabilities."""
        if not segment_tokens:
            return []
        for newest_first, scored in enumerate(reversed(self._scored)):
            start = _find(scored.tokens, segment_tokens, scored.consumed)
            if start is None:
                continue
            scored.consumed = start + len(segment_tokens)
            # Older sequences were fallbacks not chosen, or earlier windows: done with.
            del self._scored[: len(self._scored) - 1 - newest_first]
            return [
                self._logprob(scored.tokens[index], scored.probabilities[index])
                for index in range(start, start + len(segment_tokens))
                if index in scored.probabilities
            ]
        logger.warning("no scored sequence holds a segment's tokens; its logprobs are missing")
        return []

    def _logprob(self, token: int, probability: float) -> Logprob:
        raw = token_bytes(self._tokenizer, token)
        return Logprob(
            token=raw.decode("utf-8", errors="replace"),
            logprob=math.log(max(probability, _SMALLEST_PROBABILITY)),
            bytes=list(raw),
        )


_END = object()


def _find(haystack: list[int], needle: list[int], start: int) -> int | None:
    last = len(haystack) - len(needle)
    first = needle[0]
    for index in range(start, last + 1):
        if haystack[index] == first and haystack[index : index + len(needle)] == needle:
            return index
    return None


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's, which Whisper's tokenizer uses): each byte is written as one
    printable character, the printable Latin-1 bytes as themselves and the rest as code points from 256 up."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [byte for byte in range(256) if byte not in printable]
    return {chr(byte): byte for byte in printable} | {chr(256 + offset): byte for offset, byte in enumerate(others)}


_BYTE_OF_CHARACTER = _byte_level_alphabet()


def token_bytes(tokenizer: Any, token: int) -> bytes:
    """The exact bytes a token stands for (a token may hold part of a UTF-8 character)."""
    piece = tokenizer.id_to_token(token)
    if piece is not None and all(character in _BYTE_OF_CHARACTER for character in piece):
        return bytes(_BYTE_OF_CHARACTER[character] for character in piece)
    return str(tokenizer.decode([token])).encode("utf-8")

"""Token log probabilities come from the decoder: in-process checks against faster-whisper itself.

faster-whisper's word probabilities are the mean of CTranslate2's teacher-forced token probabilities
(`Whisper.align`) over each word's tokens. For a first window (no previous text, no prompt) our
scoring pass has exactly that context, so grouping our tokens into words must give its numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile

from speaches.audio.decoding import WHISPER_SAMPLE_RATE, decode_audio
from speaches.config import Settings
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.logprobs import token_bytes
from speaches.transcription.whisper import DecodeOptions, Transcription, load_whisper_model
from tests.helpers import AUDIO_DIR, TINY_EN

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from speaches.transcription.protocol import Logprob

_PUNCTUATION_ONLY = re.compile(r"^\W+$")


def load(model_id: str) -> WhisperModel:
    return load_whisper_model(ModelRef(Kind.STT, model_id), Settings()).model


@pytest.fixture(scope="module")
def tiny() -> Iterator[WhisperModel]:
    model = load(TINY_EN)
    yield model
    model.model.unload_model()


def decoded_wav(source: Path, folder: Path) -> tuple[np.ndarray, Path]:
    """The samples our decoder makes of `source`, and a 16 kHz float wav holding exactly them."""
    samples = decode_audio(source.read_bytes())
    path = folder / f"{source.stem}.wav"
    soundfile.write(path, samples, WHISPER_SAMPLE_RATE, subtype="FLOAT")
    return samples, path


def our_logprobs(model: WhisperModel, path: Path, **options: object) -> tuple[str, list[Logprob]]:
    with path.open("rb") as audio:
        transcription = Transcription(
            audio, DecodeOptions(token_logprobs=True, **options), Settings().whisper, model_id="test"
        )
        segments = list(transcription.segments(model))
    logprobs = [logprob for segment in segments for logprob in transcription.take_logprobs(segment.id)]
    return "".join(segment.text for segment in segments), logprobs


def word_means(logprobs: list[Logprob]) -> list[float]:
    """Mean token probability per word: a word starts at a token with a leading space; punctuation
    tokens are words of their own to faster-whisper, merged later without their probability."""
    words: list[list[float]] = []
    for logprob in logprobs:
        if _PUNCTUATION_ONLY.match(logprob.token.strip() or "x"):
            continue
        if logprob.token.startswith(" ") or not words:
            words.append([])
        words[-1].append(math.exp(logprob.logprob))
    return [float(np.mean(word)) for word in words]


def test_token_probabilities_are_the_ones_faster_whisper_averages_into_word_probabilities(
    tiny: WhisperModel, tmp_path: Path
) -> None:
    samples, wav = decoded_wav(AUDIO_DIR / "jfk.flac", tmp_path)
    segments, _info = tiny.transcribe(samples, word_timestamps=True)
    words = [word for segment in segments for word in segment.words or ()]

    text, logprobs = our_logprobs(tiny, wav)

    assert text == "".join(logprob.token for logprob in logprobs)
    ours = word_means(logprobs)
    assert len(ours) == len(words)
    for mean, word in zip(ours, words, strict=True):
        assert mean == pytest.approx(word.probability, abs=2e-3), word


def test_a_prompt_changes_the_probabilities_of_the_same_tokens(tiny: WhisperModel, tmp_path: Path) -> None:
    """The pass is conditioned on the prompt the decoder was given, not on an empty context."""
    _samples, wav = decoded_wav(AUDIO_DIR / "turn_on_the_living_room_lamp.wav", tmp_path)
    plain_text, plain = our_logprobs(tiny, wav)
    prompted_text, prompted = our_logprobs(tiny, wav, prompt="Smart home commands: turn on the living room lamp.")
    assert plain_text == prompted_text
    assert [lp.token for lp in plain] == [lp.token for lp in prompted]
    assert [lp.logprob for lp in plain] != [lp.logprob for lp in prompted]
    assert sum(lp.logprob for lp in prompted) > sum(lp.logprob for lp in plain), "the prompt made it likelier"


def test_token_bytes_rebuild_text_that_splits_characters_across_tokens(tiny: WhisperModel) -> None:
    tokenizer = tiny.hf_tokenizer
    every_piece: list[bytes] = []
    for text in (" Wohnzimmerlicht für Jürgen", " 日本語のテキスト", " naïve café — «déjà»"):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        pieces = [token_bytes(tokenizer, token) for token in ids]
        assert b"".join(pieces).decode("utf-8") == text
        every_piece.extend(pieces)
    assert any(not _valid_utf8(piece) for piece in every_piece), "some token holds part of a character"


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

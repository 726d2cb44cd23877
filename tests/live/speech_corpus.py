"""Long, varied speech with a known script, for the tests and benchmarks that must not lose a sentence.

A *programme* is a sequence of sentences, each a piece of real audio with its reference text, joined with
pauses of varied length: the shared recordings (jfk, the lamp clip, the English half of multilingual.mp3)
and sentences spoken by the bundled piper voice, drawn in a shuffled order so that no stretch of the
programme repeats another. `missing_sentences` aligns a transcript with the programme's script and names
every sentence of which less than half arrived.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from speaches.audio.decoding import decode_audio
from tests.helpers import AUDIO_DIR, JFK_TEXT, LAMP_TEXT, LICENCE_TEXT, normalize

SAMPLE_RATE = 16_000
VOICE = "en_US-joe-medium"
LICENCE_SECONDS = 30.3  # multilingual.mp3 turns to German at about 30.7 s

_PEOPLE = ["My sister", "The old farmer", "Our new neighbour", "The young doctor", "A tired teacher", "The baker"]
_ACTIONS = [
    "planted six apple trees",
    "painted the garden fence",
    "bought a bicycle",
    "wrote a long letter",
    "cooked fresh soup",
    "fixed the kitchen window",
    "found a lost dog",
]
_WHEN = ["last Monday", "before breakfast", "in the summer", "after the storm", "on a cold morning"]
_WHERE = ["near the river", "behind the school", "in the small village", "by the train station"]


@dataclass(frozen=True)
class Sentence:
    text: str
    samples: np.ndarray
    """16 kHz mono float32."""


def scripted_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` distinct plain English sentences (at most a few hundred exist)."""
    combinations = list(itertools.product(_PEOPLE, _ACTIONS, _WHEN, _WHERE))
    random.Random(seed).shuffle(combinations)
    if count > len(combinations):
        raise ValueError(f"only {len(combinations)} distinct sentences exist")
    return [f"{who} {did} {where} {when}." for who, did, when, where in combinations[:count]]


def spoken(texts: Sequence[str]) -> list[Sentence]:
    """Each text spoken by the bundled piper voice, cached on disk (synthesis is slow on a small CPU)."""
    cache = Path(tempfile.gettempdir()) / f"speaches-corpus-{os.getuid()}"
    cache.mkdir(parents=True, exist_ok=True)
    voice = None
    sentences = []
    for text in texts:
        path = cache / f"{hashlib.sha256(f'{VOICE}:{text}'.encode()).hexdigest()[:24]}.pcm"
        if not path.exists():
            if voice is None:
                voice = _load_voice()
            path.write_bytes(_synthesize(voice, text))
        samples = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
        sentences.append(Sentence(text, samples))
    return sentences


def _load_voice() -> object:
    from speaches.config import Settings
    from speaches.models.catalog import Kind, ModelRef
    from speaches.speech.piper import load_piper_voice

    return load_piper_voice(ModelRef(Kind.TTS, VOICE), Settings()).model


def _synthesize(voice: object, text: str) -> bytes:
    from speaches.speech.piper import synthesize_speech

    return b"".join(synthesize_speech(voice, text, response_format="pcm", sample_rate=SAMPLE_RATE))  # type: ignore[arg-type]


def recordings() -> list[Sentence]:
    """The shared recordings with their reference texts."""
    licence = decode_audio(AUDIO_DIR / "multilingual.mp3")[: round(LICENCE_SECONDS * SAMPLE_RATE)]
    return [
        Sentence(JFK_TEXT, decode_audio(AUDIO_DIR / "jfk.flac")),
        Sentence(LAMP_TEXT, decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")),
        Sentence(LICENCE_TEXT, licence),
    ]


def licence_jfk_lamp() -> Sentence:
    """The live and realtime benchmarks' audio: the licence reading, jfk, the lamp clip, half a second apart."""
    jfk, lamp, licence = recordings()
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    samples = np.concatenate([licence.samples, gap, jfk.samples, gap, lamp.samples])
    return Sentence(f"{licence.text} {jfk.text} {lamp.text}", samples)


@dataclass
class Programme:
    script: list[str]
    """The reference text of each sentence, in order."""
    samples: np.ndarray
    starts: list[float]
    """Where each sentence begins in the audio, in seconds."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def pcm(self) -> bytes:
        return (np.clip(self.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def programme(
    pool: Sequence[Sentence], seconds: float, seed: int = 0, pauses: tuple[float, float] = (0.3, 1.5)
) -> Programme:
    """Sentences from `pool` in shuffled rounds (each round a new order), with random pauses, for `seconds`."""
    rng = random.Random(seed)
    pieces: list[np.ndarray] = []
    script: list[str] = []
    starts: list[float] = []
    total = 0
    limit = round(seconds * SAMPLE_RATE)
    while total < limit:
        order = list(pool)
        rng.shuffle(order)
        for sentence in order:
            if total >= limit:
                break
            pause = np.zeros(round(rng.uniform(*pauses) * SAMPLE_RATE), dtype=np.float32)
            pieces.append(pause)
            total += len(pause)
            starts.append(total / SAMPLE_RATE)
            pieces.append(sentence.samples)
            script.append(sentence.text)
            total += len(sentence.samples)
    pieces.append(np.zeros(SAMPLE_RATE, dtype=np.float32))
    return Programme(script=script, samples=np.concatenate(pieces), starts=starts)


def missing_sentences(script: Iterable[str], transcript: str, min_fraction: float = 0.5) -> list[tuple[int, str]]:
    """(index, text) of each scripted sentence of which fewer than `min_fraction` of the words are in the
    transcript where an alignment of the two puts them."""
    sentences = [normalize(text).split() for text in script]
    reference = [word for words in sentences for word in words]
    hypothesis = normalize(transcript).split() or ["<empty>"]
    matched = np.zeros(len(reference), dtype=bool)
    for chunk in jiwer.process_words(" ".join(reference), " ".join(hypothesis)).alignments[0]:
        if chunk.type == "equal":
            matched[chunk.ref_start_idx : chunk.ref_end_idx] = True
    missing = []
    position = 0
    for index, words in enumerate(sentences):
        found = int(matched[position : position + len(words)].sum())
        if found < min_fraction * len(words):
            missing.append((index, " ".join(words)))
        position += len(words)
    return missing

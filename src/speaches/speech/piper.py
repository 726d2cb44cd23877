"""piper adapter: load voices for the model manager, describe them, and speak text with them.

:func:`synthesize_speech` is the whole synthesis: piper yields one chunk of audio per sentence,
each is brought to the requested speed and fed to the response's :class:`AudioEncoder`, and the
encoded bytes are yielded at once, so a client hears the first sentence while the rest is still
being synthesized. It is a blocking generator meant to be driven one step at a time by
``InferencePool.iterate``; closing it (a client that went away) stops before the next sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speaches import metrics
from speaches.audio.encoding import AudioEncoder, supported_output_sample_rate
from speaches.config import Settings
from speaches.errors import ApiError, ModelLoadError
from speaches.models.catalog import Catalog, Kind, ModelRef
from speaches.models.device import onnx_providers, resolve_device
from speaches.models.manager import LoadedModel, ModelKind
from speaches.models.sources import LocalModel, find_piper_voice, list_local_piper_voices
from speaches.speech.protocol import VoiceObject
from speaches.speech.tempo import change_tempo

if TYPE_CHECKING:
    from piper import PiperVoice

logger = logging.getLogger(__name__)

# OpenAI sends `pcm` at 24 kHz; clients that play it raw assume that rate.
PCM_DEFAULT_SAMPLE_RATE = 24_000


# --- loading ---


def load_piper_voice(ref: ModelRef, settings: Settings) -> LoadedModel[PiperVoice]:
    """Resolve and load a piper voice (blocking)."""
    # Imported here so an idle server that never speaks does not pay for onnxruntime.
    from piper import PiperVoice

    resolved = find_piper_voice(ref, settings)
    device = resolve_device(settings.whisper.inference_device)
    providers = onnx_providers(device)
    try:
        loaded = PiperVoice.load(resolved.path, use_cuda="CUDAExecutionProvider" in providers)
    except ApiError:
        raise
    except Exception as error:  # corrupt or incompatible files: name the voice, keep serving
        raise ModelLoadError(ref.id, f"{type(error).__name__}: {error}") from error
    return LoadedModel(model=loaded, device="cuda" if "CUDAExecutionProvider" in providers else "cpu")


def piper_voice_kind(settings: Settings) -> ModelKind[PiperVoice]:
    return ModelKind(
        name=Kind.TTS,
        load=lambda ref: load_piper_voice(ref, settings),
        ttl=lambda: settings.tts_model_ttl,
        max_loaded=lambda: settings.tts_max_loaded_models,
        setting="TTS_MAX_LOADED_MODELS",
    )


# --- the voice catalogue ---


def list_voices(catalog: Catalog) -> list[VoiceObject]:
    """Every voice usable without a download (blocking file reads). Unreadable configs are skipped."""
    voices: list[VoiceObject] = []
    for local in list_local_piper_voices(catalog.settings):
        try:
            voices.append(read_voice_info(local, catalog))
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("skipping voice %s: its config %s.json is unreadable: %s", local.model_id, local.path, error)
    return voices


def read_voice_info(local: LocalModel, catalog: Catalog) -> VoiceObject:
    config = json.loads(Path(f"{local.path}.json").read_text(encoding="utf-8"))
    audio = config.get("audio", {})
    language = config.get("language", {})
    # Voice ids follow `<lang_REGION>-<name>-<quality>`; the config has the authoritative values.
    parts = local.model_id.split("-")
    return VoiceObject(
        id=local.model_id,
        name=str(config.get("dataset") or (parts[1] if len(parts) == 3 else local.model_id)),
        language=str(language.get("code") or (parts[0] if len(parts) == 3 else "")),
        language_name=language.get("name_english"),
        quality=str(audio.get("quality") or (parts[2] if len(parts) == 3 else "")),
        sample_rate=int(audio["sample_rate"]),
        num_speakers=int(config.get("num_speakers", 1)),
        source=local.source,
        aliases=catalog.aliases_of(local.model_id),
    )


# --- synthesis ---


@dataclass
class SynthesisUsage:
    """Counted while synthesizing; complete once the generator is exhausted."""

    phoneme_ids: int = 0
    """piper's input tokens: the phoneme ids fed to the model."""
    frames: int = 0
    """piper's output tokens: spectrogram frames (hop_length samples each) the model produced."""
    sentences: int = 0


def output_sample_rate(response_format: str, requested: int | None, voice_sample_rate: int) -> int:
    """The rate a response is encoded at: the requested one, else 24 kHz for pcm and the voice's own
    rate otherwise, adjusted to what the codec accepts (opus: 22050 -> 24000)."""
    if requested is None:
        requested = PCM_DEFAULT_SAMPLE_RATE if response_format == "pcm" else voice_sample_rate
    return supported_output_sample_rate(response_format, requested)


def synthesize_speech(
    voice: PiperVoice,
    text: str,
    *,
    response_format: str,
    speed: float = 1.0,
    sample_rate: int | None = None,
    usage: SynthesisUsage | None = None,
) -> Generator[bytes, None, None]:
    """Speak `text`, yielding the encoded response file piece by piece, one step per sentence.

    The concatenation of what it yields is a complete file in `response_format`. Every format but
    wav and flac streams: those carry their exact length in their header (every reader trusts it;
    libsndfile cannot read a flac that says "length unknown"), so they come whole at the end.
    """
    usage = usage if usage is not None else SynthesisUsage()
    voice_rate = voice.config.sample_rate
    hop_length = voice.config.hop_length
    encoder = AudioEncoder(
        response_format,
        voice_rate,
        output_sample_rate(response_format, sample_rate, voice_rate),
    )
    with encoder:
        try:
            for audio, phoneme_ids in speak_sentences(voice, text):
                usage.sentences += 1
                usage.phoneme_ids += phoneme_ids
                usage.frames += len(audio) // hop_length
                samples = change_tempo(audio, voice_rate, speed)
                metrics.record_audio_seconds("speech", len(samples) / voice_rate)
                encoded = encoder.encode(np.clip(samples, -1.0, 1.0, out=samples))
                if encoded:
                    yield encoded
        except GeneratorExit:
            logger.info("speech synthesis stopped after %d sentence(s): the client went away", usage.sentences)
            raise
        tail = encoder.finish()
        if tail:
            yield tail


# A sentence is synthesized in one model run whose memory and time grow faster than its length
# (measured: a 4000-character run-on sentence took 69 s and 5.4 GB at once, and nothing streamed).
# Longer sentences are cut at a clause mark or a word boundary into pieces of at most this many
# phonemes (about as many characters of English text, some 5 s of speech).
MAX_PHONEMES_PER_RUN = 300
_CLAUSE_MARKS = frozenset(",;:")
# The first audio waits for the first model run. A long first sentence is spoken clause by clause up
# to its first clause mark, so the client hears its opening words while the rest is synthesized (and
# the first clause plays for longer than the rest takes to synthesize). Sentences of fewer phonemes
# than this, and clauses shorter than the minimum, are left whole: cutting them gains little and
# costs the sentence's flow.
FIRST_CLAUSE_SPLIT_ABOVE = 80
MIN_CLAUSE_PHONEMES = 16


def speak_sentences(voice: PiperVoice, text: str) -> Iterator[tuple[np.ndarray, int]]:
    """(float32 audio, phoneme ids used) for each sentence of `text`, in order: piper's own
    `synthesize` loop, with over-long sentences split so no single model run is huge, and a long
    first sentence split after its first clause so the first audio comes sooner."""
    for index, sentence in enumerate(voice.phonemize(text)):
        pieces = split_phonemes(sentence, MAX_PHONEMES_PER_RUN)
        if index == 0 and pieces:
            pieces = [*split_first_clause(pieces[0]), *pieces[1:]]
        for phonemes in pieces:
            phoneme_ids = voice.phonemes_to_ids(phonemes)
            audio = np.asarray(voice.phoneme_ids_to_audio(phoneme_ids), dtype=np.float32)
            # piper normalizes each sentence to full scale, as its synthesize() does by default.
            peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
            if peak > 1e-8:
                audio = audio / peak
            yield np.clip(audio, -1.0, 1.0), len(phoneme_ids)


def split_phonemes(phonemes: list[str], limit: int) -> list[list[str]]:
    """Cut a sentence's phonemes into pieces of at most `limit`: after the last clause mark in the
    second half of the allowance, else at the last word boundary there, else at the limit itself.
    Pieces without a sound (only spaces and marks) are dropped."""
    pieces: list[list[str]] = []
    start = 0
    while len(phonemes) - start > limit:
        end = start + limit
        window = range(end, start + limit // 2, -1)
        cut = next((i for i in window if phonemes[i - 1] in _CLAUSE_MARKS), None)
        if cut is None:
            cut = next((i for i in window if phonemes[i - 1] == " "), end)
        pieces.append(phonemes[start:cut])
        start = cut
    pieces.append(phonemes[start:])
    return [_strip_spaces(piece) for piece in pieces if any(p.strip() and p not in _SILENT_MARKS for p in piece)]


_SILENT_MARKS = frozenset(",;:.!?-'\"()")


def split_first_clause(phonemes: list[str]) -> list[list[str]]:
    """A long sentence's phonemes cut after its first clause mark (`,` `;` `:`), when both sides are at
    least MIN_CLAUSE_PHONEMES long; otherwise the sentence whole."""
    if len(phonemes) <= FIRST_CLAUSE_SPLIT_ABOVE:
        return [phonemes]
    last_cut = len(phonemes) - MIN_CLAUSE_PHONEMES
    cut = next(
        (i + 1 for i in range(MIN_CLAUSE_PHONEMES - 1, last_cut) if phonemes[i] in _CLAUSE_MARKS),
        None,
    )
    if cut is None:
        return [phonemes]
    return [_strip_spaces(phonemes[:cut]), _strip_spaces(phonemes[cut:])]


def _strip_spaces(phonemes: list[str]) -> list[str]:
    start, end = 0, len(phonemes)
    while start < end and phonemes[start] == " ":
        start += 1
    while end > start and phonemes[end - 1] == " ":
        end -= 1
    return phonemes[start:end]

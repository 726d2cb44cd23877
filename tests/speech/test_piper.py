"""speaches.speech.piper on its own: over-long sentences cut into pieces, output rates, voice configs, and the
synthesis generator with the real bundled voice (in-process, no server)."""

from __future__ import annotations

import io
import json
import logging
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import pytest

from speaches.config import Settings
from speaches.models.catalog import Catalog, Kind, ModelRef
from speaches.models.sources import LocalModel
from speaches.speech.piper import (
    MAX_PHONEMES_PER_RUN,
    SynthesisUsage,
    load_piper_voice,
    output_sample_rate,
    read_voice_info,
    speak_sentences,
    split_phonemes,
    synthesize_speech,
)

if TYPE_CHECKING:
    from piper import PiperVoice


RATE = 22050


PARAGRAPH = "One sentence comes first. A second one follows it. Then there is a third. The fourth ends it."


def settings(**fields: Any) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


def test_a_short_sentence_is_one_piece() -> None:
    phonemes = list("həlˈoʊ wˈɜːld")
    assert split_phonemes(phonemes, 300) == [phonemes]


def test_a_long_sentence_is_cut_after_a_clause_mark_first_then_at_a_word() -> None:
    clause = list("aaaa bbbb, cccc dddd eeee")  # the comma sits in the second half of a 12-phoneme allowance
    assert split_phonemes(clause, 12) == [list("aaaa bbbb,"), list("cccc dddd"), list("eeee")]
    words = list("aaaa bbbb cccc dddd")
    assert split_phonemes(words, 12) == [list("aaaa bbbb"), list("cccc dddd")]


def test_a_sentence_without_spaces_is_cut_at_the_limit_and_nothing_is_lost() -> None:
    phonemes = list("x" * 25)
    pieces = split_phonemes(phonemes, 10)
    assert [len(piece) for piece in pieces] == [10, 10, 5]
    assert [phoneme for piece in pieces for phoneme in piece] == phonemes


def test_pieces_without_sound_are_dropped() -> None:
    assert split_phonemes(list("aaaa bbb ...."), 9) == [list("aaaa bbb")]
    assert split_phonemes(list("..."), 300) == []


@pytest.mark.parametrize(
    ("response_format", "requested", "expected"),
    [
        ("pcm", None, 24000),  # OpenAI's pcm rate
        ("mp3", None, RATE),
        ("wav", None, RATE),
        ("flac", None, RATE),
        ("aac", None, RATE),
        ("opus", None, 24000),  # Opus has no 22050: the next rate up
        ("pcm", 16000, 16000),
        ("mp3", 10000, 11025),
        ("wav", 44100, 44100),
    ],
)
def test_output_sample_rate(response_format: str, requested: int | None, expected: int) -> None:
    assert output_sample_rate(response_format, requested, RATE) == expected


def test_voice_info_comes_from_the_config_file(tmp_path: Path) -> None:
    onnx = tmp_path / "de_DE-thorsten-high.onnx"
    onnx.write_bytes(b"not read")
    config = {
        "audio": {"sample_rate": 22050, "quality": "high"},
        "language": {"code": "de_DE", "name_english": "German"},
        "dataset": "thorsten",
        "num_speakers": 1,
    }
    Path(f"{onnx}.json").write_text(json.dumps(config))
    info = read_voice_info(LocalModel("de_DE-thorsten-high", Kind.TTS, onnx, "local", 0), Catalog(settings()))
    assert (info.language, info.language_name, info.quality, info.sample_rate) == ("de_DE", "German", "high", 22050)
    assert (info.name, info.source, info.aliases) == ("thorsten", "local", [])


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    return load_piper_voice(ModelRef(Kind.TTS, "en_US-joe-medium"), settings()).model


def test_pcm_comes_one_piece_per_sentence(voice: PiperVoice) -> None:
    usage = SynthesisUsage()
    pieces = list(synthesize_speech(voice, PARAGRAPH, response_format="pcm", usage=usage))
    assert usage.sentences == 4
    assert len(pieces) >= 4
    assert usage.phoneme_ids > len(PARAGRAPH) / 2
    samples = len(b"".join(pieces)) // 2
    # 24 kHz out of the voice's 22050 Hz: the frames piper produced, resampled.
    assert samples == pytest.approx(usage.frames * voice.config.hop_length * 24000 / RATE, rel=0.01)


def test_a_run_on_sentence_is_synthesized_in_bounded_pieces(voice: PiperVoice) -> None:
    run_on = " ".join(["and then the little dog ran all around the garden"] * 14)  # ~700 characters, no stop
    assert len(voice.phonemize(run_on)) == 1
    pieces = list(speak_sentences(voice, run_on))
    assert len(pieces) >= 2
    assert all(phoneme_ids <= 2 * MAX_PHONEMES_PER_RUN + 2 for _audio, phoneme_ids in pieces)  # ids: pad between each


def test_wav_comes_whole_with_exact_sizes(voice: PiperVoice) -> None:
    pieces = list(synthesize_speech(voice, PARAGRAPH, response_format="wav"))
    assert len(pieces) == 1
    wav = pieces[0]
    assert struct.unpack("<4sI4s", wav[:12]) == (b"RIFF", len(wav) - 8, b"WAVE")
    assert struct.unpack("<4sI", wav[36:44]) == (b"data", len(wav) - 44)


@pytest.mark.parametrize("response_format", ["mp3", "flac"])
def test_compressed_formats_stream_and_decode_whole(voice: PiperVoice, response_format: str) -> None:
    usage = SynthesisUsage()
    pieces = list(synthesize_speech(voice, PARAGRAPH, response_format=response_format, usage=usage))
    # mp3 streams; flac comes whole, with its exact length in STREAMINFO.
    assert len(pieces) >= 3 if response_format == "mp3" else len(pieces) == 1
    with av.open(io.BytesIO(b"".join(pieces))) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    produced = usage.frames * voice.config.hop_length
    assert decoded == pytest.approx(produced, abs=0.1 * RATE)


def test_closing_the_generator_stops_before_the_next_sentence(
    voice: PiperVoice, caplog: pytest.LogCaptureFixture
) -> None:
    usage = SynthesisUsage()
    pieces = synthesize_speech(voice, PARAGRAPH, response_format="mp3", usage=usage)
    assert next(pieces)
    with caplog.at_level(logging.INFO, logger="speaches.speech.piper"):
        pieces.close()
    assert usage.sentences == 1
    assert "stopped after 1 sentence" in caplog.text


def test_speed_scales_the_duration(voice: PiperVoice) -> None:
    def seconds(speed: float) -> float:
        return len(b"".join(synthesize_speech(voice, PARAGRAPH, response_format="pcm", speed=speed))) / 2 / 24000

    normal = seconds(1.0)
    assert seconds(2.0) / normal == pytest.approx(0.5, abs=0.08)
    assert seconds(0.5) / normal == pytest.approx(2.0, abs=0.3)

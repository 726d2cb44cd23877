"""With WHISPER__CONTENT_WINDOWS a short window is encoded as its audio and a second of padding, not as 30 s."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.transcribe import Word

from speaches.audio.decoding import decode_audio
from speaches.config import Settings, WhisperConfig
from speaches.live.hearing import transcribe_buffer
from speaches.models.catalog import Kind, ModelRef
from speaches.transcription.batching import BatchingWhisper
from speaches.transcription.content_window import (
    MIN_FRAMES,
    TAIL_FRAMES,
    ContentWindowWhisperModel,
    content_windows,
    cuts_windows,
    full_windows,
    trim_window_padding,
)
from speaches.transcription.whisper import DecodeOptions, Transcription, load_whisper_model
from tests.helpers import AUDIO_DIR, BASE, FRENCH_TRANSLATION, JFK_TEXT, LAMP_TEXT, TINY_EN, word_error_rate

DENSE = AUDIO_DIR / "dense_repeated_sentences.opus"
BANDS = 80
WINDOW = 3000


def window(audio_frames: int, *, value: float = -0.7) -> np.ndarray:
    """A padded window as faster-whisper makes one: `audio_frames` of log-mel, then zeros up to 30 s."""
    features = np.zeros((BANDS, WINDOW), dtype=np.float32)
    features[:, :audio_frames] = value
    return features


@pytest.mark.parametrize(
    ("audio_frames", "kept"),
    [
        (1, MIN_FRAMES),  # a sliver of audio still gets the 10 s that keeps Whisper out of loops
        (300, MIN_FRAMES),
        (900, MIN_FRAMES),
        (901, 1500),  # the audio, a second of padding, in whole 5 s
        (1550, 2000),
        (2400, 2500),
        (2401, WINDOW),  # as good as full: unchanged
        (WINDOW, WINDOW),
    ],
)
def test_a_window_keeps_its_audio_and_a_second_of_padding(audio_frames: int, kept: int) -> None:
    features = window(audio_frames)
    trimmed = trim_window_padding(features)
    assert trimmed.shape == (BANDS, kept)
    np.testing.assert_array_equal(trimmed, features[:, :kept])
    if kept < WINDOW:
        assert (trimmed[:, audio_frames:] == 0).all()
        assert trimmed.shape[-1] - audio_frames >= TAIL_FRAMES


def test_a_batch_is_cut_after_its_longest_window() -> None:
    batch = np.stack([window(400), window(1700), window(200)])
    assert trim_window_padding(batch).shape == (3, BANDS, 2000)


def test_digital_silence_is_audio_not_padding() -> None:
    # A frame of silence has a log-mel value of its own (the floor), never zero in every band.
    features = window(200, value=0.5)
    features[:, 200:1900] = -1.5
    assert trim_window_padding(features).shape[-1] == 2000


def test_no_audio_at_all_is_the_shortest_window() -> None:
    assert trim_window_padding(np.zeros((1, BANDS, WINDOW), dtype=np.float32)).shape[-1] == MIN_FRAMES


def test_the_loader_cuts_windows_where_the_setting_says() -> None:
    """`off`: faster-whisper's own model. `live`: cut only where a live step asks (`content_windows`). `all`: cut
    everywhere but where a decisive live step asks for the full window."""
    settings = Settings()
    models = {}
    for setting in ("off", "live", "all"):
        settings.whisper.content_windows = setting  # type: ignore[assignment]
        models[setting] = load_whisper_model(ModelRef(Kind.STT, TINY_EN), settings).model
    assert type(models["off"]) is WhisperModel
    seen = {}
    for setting, model in models.items():
        with content_windows():
            inside_content = cuts_windows(model)
            with full_windows():
                inside_full_within_content = cuts_windows(model)
        with full_windows():
            inside_full = cuts_windows(model)
        seen[setting] = (cuts_windows(model), inside_content, inside_full, inside_full_within_content)
    assert seen == {
        "off": (False, False, False, False),
        "live": (False, True, False, False),
        "all": (True, True, False, False),
    }


@pytest.fixture(scope="module")
def base_models() -> tuple[WhisperModel, WhisperModel]:
    settings = Settings()
    settings.whisper.max_batch_size = 1
    settings.whisper.content_windows = "all"
    content = load_whisper_model(ModelRef(Kind.STT, BASE), settings).model
    settings.whisper.content_windows = "off"
    return content, load_whisper_model(ModelRef(Kind.STT, BASE), settings).model


def test_transcripts_match_the_full_window(base_models: tuple[WhisperModel, WhisperModel]) -> None:
    """Uploads (sequential, both tasks) and a live step: the same words as with 30 s windows."""
    content, full = base_models
    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    lamp = decode_audio(AUDIO_DIR / "turn_on_the_living_room_lamp.wav")
    french = decode_audio(AUDIO_DIR / "whats_your_name_french.wav")

    def upload(model: WhisperModel, audio: np.ndarray, language: str, task: str = "transcribe") -> str:
        segments, _info = model.transcribe(audio, language=language, task=task, temperature=0.0)
        return "".join(segment.text for segment in segments)

    for audio, reference in ((jfk, JFK_TEXT), (lamp, LAMP_TEXT)):
        assert word_error_rate(reference, upload(content, audio, "en")) == 0
        assert word_error_rate(reference, upload(full, audio, "en")) == 0
    assert word_error_rate(FRENCH_TRANSLATION, upload(content, french, "fr", "translate")) == 0

    step = [word.word for word in transcribe_buffer(content, jfk[: 6 * 16_000], "en", "").words]
    full_step = [word.word for word in transcribe_buffer(full, jfk[: 6 * 16_000], "en", "").words]
    assert step == full_step


def test_batched_mode_keeps_every_sentence_with_content_windows() -> None:
    """Batched mode encodes a batch window by window on a CPU, each cut to the batch's longest audio (so that
    the outputs stack), and its chunks are up to 15 s: the dense clip comes out as well as with 30 s windows."""
    reference = DENSE.with_suffix(".txt").read_text(encoding="utf-8")
    errors = {}
    for trim in (True, False):
        config = WhisperConfig(max_batch_size=1, content_windows="all" if trim else "off")
        model = load_whisper_model(ModelRef(Kind.STT, TINY_EN), Settings(whisper=config)).model
        assert isinstance(model, ContentWindowWhisperModel) is trim
        transcription = Transcription(DENSE, DecodeOptions(), config, model_id=TINY_EN)
        text = "".join(segment.text for segment in transcription.segments(model))
        assert transcription.batched_windows == 1
        errors[trim] = word_error_rate(reference, text)
    assert errors[True] <= 0.05, errors
    assert errors[True] <= errors[False] + 0.02, errors


def test_language_detection_on_a_content_window(base_models: tuple[WhisperModel, WhisperModel]) -> None:
    content, _full = base_models
    _segments, info = content.transcribe(decode_audio(AUDIO_DIR / "living_room_light_de.wav"))
    assert info.language == "de"


def test_content_windows_of_one_length_share_a_batch() -> None:
    """jfk (11 s) and 12 s of the licence reading both encode as 15 s windows: their decoding merges across the
    two requests, and each gets what it gets alone."""
    from tests.transcription.test_batching import assert_same, concurrently, transcribe

    jfk = decode_audio(AUDIO_DIR / "jfk.flac")
    licence = decode_audio(AUDIO_DIR / "multilingual.mp3")[: 12 * 16_000]
    whisper = {"max_batch_size": 8, "batch_wait_ms": 1000, "num_workers": 1, "content_windows": "all"}
    batching = load_whisper_model(ModelRef(Kind.STT, TINY_EN), Settings(whisper=whisper)).model
    alone_settings = Settings(whisper={"max_batch_size": 1, "content_windows": "all"})
    alone_model = load_whisper_model(ModelRef(Kind.STT, TINY_EN), alone_settings).model
    options = {"beam_size": 1, "temperature": 0.0}
    alone = [transcribe(alone_model, audio, **options) for audio in (jfk, licence)]
    queue = batching.model
    assert isinstance(queue, BatchingWhisper)
    together = concurrently([lambda a=audio: transcribe(batching, a, **options) for audio in (jfk, licence)])
    for reference, result in zip(alone, together, strict=True):
        assert_same(reference, result)
    assert any(call == "generate" and windows > 1 for call, windows in queue.batch_sizes), queue.batch_sizes


def test_a_live_step_whose_content_window_loops_is_heard_again_at_full_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows cut right at the audio's end (no tail, no minimum) send tiny.en into loops on jfk's first 2 s
    ("And so my fellow mirror and so my fellow mirror ..."); the live step notices and hears the buffer again at
    30 s, so what it returns is what the full window hears."""
    from speaches.live import hearing
    from speaches.transcription import content_window

    settings = Settings(whisper={"max_batch_size": 1, "content_windows": "live"})
    model = load_whisper_model(ModelRef(Kind.STT, TINY_EN), settings).model
    buffer = decode_audio(AUDIO_DIR / "jfk.flac")[: 2 * 16_000]
    full = [word.word for word in transcribe_buffer(model, buffer, "en", "", decisive=True).words]
    monkeypatch.setattr(content_window, "MIN_FRAMES", 100)
    monkeypatch.setattr(content_window, "TAIL_FRAMES", 0)
    monkeypatch.setattr(content_window, "ROUND_FRAMES", 2)
    with content_windows():
        segments, _ = model.transcribe(buffer, language="en", beam_size=1, temperature=0.0, max_new_tokens=48)
        looped = "".join(segment.text for segment in segments)
    assert hearing.repeats_itself([Word(0, 0, f" {word}", 1.0) for word in looped.split()]), looped
    stepped = [word.word for word in transcribe_buffer(model, buffer, "en", "").words]
    assert stepped == full
    assert not hearing.repeats_itself(transcribe_buffer(model, buffer, "en", "").words)


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        ("n, n, n, n, n, n,", True),
        ("And so my fellow Americans. And so my fellow Americans. And so my fellow Americans.", True),
        ("and so and so and so and", True),
        (JFK_TEXT, False),
        (LAMP_TEXT, False),
        ("No, no. Not that one.", False),
    ],
)
def test_a_phrase_said_three_times_in_a_row_is_a_loop(text: str, loops: bool) -> None:
    from speaches.live.hearing import repeats_itself

    assert repeats_itself([Word(0, 0, f" {word}", 1.0) for word in text.split()]) is loops

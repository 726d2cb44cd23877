"""Fast tests of the Realtime pieces that need no model: G.711 and resampling, the streaming VAD, turn
boundaries, and the event shapes (checked against the openai SDK's own models)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from faster_whisper.vad import get_vad_model
from openai._models import validate_type
from openai.types.realtime import RealtimeErrorEvent, RealtimeServerEvent, RealtimeTranslationServerEvent

from speaches.audio.decoding import decode_audio
from speaches.realtime import protocol
from speaches.realtime.audio_input import (
    A_LAW_TO_PCM16,
    MU_LAW_TO_PCM16,
    InputDecoder,
    InputFormat,
    decode_g711,
)
from speaches.realtime.protocol import EventError
from speaches.realtime.vad import WINDOW_SAMPLES, SpeechProbabilities, TurnDetector, VadSettings
from speaches.realtime.work import AudioIntake, decode_base64
from tests.helpers import AUDIO_DIR


def test_g711_tables_hold_the_standard_values() -> None:
    # ITU-T G.711: μ-law 0xFF and 0x7F are the two zeros, 0x00 / 0x80 the extremes; A-law 0xD5 / 0x55 are
    # the smallest steps (+8 / -8), 0xAA / 0x2A the extremes.
    assert [int(MU_LAW_TO_PCM16[code]) for code in (0xFF, 0x7F, 0x00, 0x80)] == [0, 0, -32124, 32124]
    assert [int(A_LAW_TO_PCM16[code]) for code in (0xD5, 0x55, 0xAA, 0x2A)] == [8, -8, 32256, -32256]
    # Monotonic within each sign: a companding table, not a scramble.
    positive_mu = MU_LAW_TO_PCM16[0x80:0xFF].astype(int)
    assert (np.diff(positive_mu) < 0).all()


@pytest.mark.parametrize(("codec", "encoding"), [("pcm_mulaw", "pcmu"), ("pcm_alaw", "pcma")])
def test_g711_decoding_matches_ffmpeg(codec: str, encoding: str) -> None:
    decoder = av.CodecContext.create(codec, "r")
    decoder.sample_rate = 8000
    decoder.layout = "mono"
    every_byte = bytes(range(256))
    frames = decoder.decode(av.Packet(every_byte))
    reference = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    np.testing.assert_array_equal(decode_g711(every_byte, encoding), reference)  # type: ignore[arg-type]


def tone(rate: int, seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2")


@pytest.mark.parametrize("chunk_bytes", [4800, 4801, 333])
def test_24_khz_pcm_streams_to_16_khz_as_one_signal(chunk_bytes: int) -> None:
    pcm = tone(24_000, 2.0).tobytes()
    decoder = InputDecoder(InputFormat("pcm16", 24_000))
    pieces = [decoder.decode(pcm[offset : offset + chunk_bytes]) for offset in range(0, len(pcm), chunk_bytes)]
    samples = np.concatenate([*pieces, decoder.flush()])
    assert abs(len(samples) - 32_000) <= 2
    # Still a 440 Hz tone at half scale: the strongest frequency and the level survive the resampling.
    spectrum = np.abs(np.fft.rfft(samples[1000:-1000]))
    peak = np.argmax(spectrum) * 16_000 / len(samples[1000:-1000])
    assert abs(peak - 440) < 2
    assert 0.45 < np.max(np.abs(samples[1000:-1000])) < 0.55


def test_16_khz_pcm_passes_through_exactly() -> None:
    pcm = tone(16_000, 0.5)
    decoder = InputDecoder(InputFormat("pcm16", 16_000))
    np.testing.assert_allclose(decoder.decode(pcm.tobytes()), pcm / 32768.0)


def test_8_khz_mu_law_speech_becomes_16_khz() -> None:
    speech = decode_audio(AUDIO_DIR / "jfk.flac", 8000)
    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.sample_rate = 8000
    encoder.layout = "mono"
    encoder.format = "s16"
    frame = av.AudioFrame.from_ndarray((speech * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
    frame.sample_rate = 8000
    encoded = b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])
    assert len(encoded) == len(speech)
    decoder = InputDecoder(InputFormat("pcmu", 8000))
    samples = np.concatenate([decoder.decode(encoded[:1000]), decoder.decode(encoded[1000:]), decoder.flush()])
    assert abs(len(samples) - 2 * len(speech)) <= 2
    # Companding keeps the waveform: the decoded speech correlates with the original at 16 kHz.
    original = decode_audio(AUDIO_DIR / "jfk.flac")
    length = min(len(original), len(samples))
    correlation = np.corrcoef(original[:length], samples[:length])[0, 1]
    assert correlation > 0.8, correlation


def test_streaming_vad_equals_one_pass_over_the_whole_audio() -> None:
    audio = decode_audio(AUDIO_DIR / "jfk.flac")
    audio = audio[: len(audio) // WINDOW_SAMPLES * WINDOW_SAMPLES]
    whole = get_vad_model()(audio)
    stream = SpeechProbabilities()
    pieces = [stream.process(audio[offset : offset + 1000]) for offset in range(0, len(audio), 1000)]
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    assert stream.windows == len(whole)


def test_turn_detector_finds_start_and_stop() -> None:
    detector = TurnDetector(VadSettings(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    # 10 silent windows, 2 loud (too short to start), 3 silent, 20 loud, then 20 silent.
    probabilities = np.array([0.1] * 10 + [0.9] * 2 + [0.1] * 3 + [0.9] * 20 + [0.1] * 20, dtype=np.float32)
    boundaries = detector.push(probabilities[:20], 0) + detector.push(probabilities[20:], 20)
    assert [boundary.kind for boundary in boundaries] == ["start", "pause", "stop"]
    assert boundaries[0].sample == 15 * WINDOW_SAMPLES
    # A pause is told where its silence began, once 8 windows (256 ms) of it are heard.
    assert boundaries[1].sample == 35 * WINDOW_SAMPLES
    # 500 ms of silence is 16 windows (at 32 ms): the stop falls at the end of the 16th silent window.
    assert boundaries[2].sample == (35 + 16) * WINDOW_SAMPLES
    assert not detector.speaking


def test_turn_detector_keeps_a_turn_through_hesitations() -> None:
    detector = TurnDetector(VadSettings(threshold=0.5, silence_duration_ms=500))
    # Speech, a 0.3 s pause (10 windows), a probability between the thresholds, more speech: one turn.
    probabilities = np.array([0.9] * 10 + [0.1] * 10 + [0.4] * 3 + [0.9] * 10, dtype=np.float32)
    boundaries = detector.push(probabilities, 0)
    assert [(boundary.kind, boundary.sample) for boundary in boundaries] == [
        ("start", 0),
        ("pause", 10 * WINDOW_SAMPLES),
    ]
    assert detector.speaking


def test_intake_scores_the_windows_it_completes() -> None:
    intake = AudioIntake(InputFormat("pcm16", 16_000), with_vad=True)
    import base64

    first = intake.take(base64.b64encode(bytes(2 * 700)).decode())
    second = intake.take(base64.b64encode(bytes(2 * 400)).decode())
    assert (len(first.probabilities), first.first_window) == (1, 0)
    assert (len(second.probabilities), second.first_window) == (1, 1)


def test_bad_base64_is_an_event_error() -> None:
    with pytest.raises(EventError) as refusal:
        decode_base64("not base64!")
    assert refusal.value.param == "audio"


def parse(event: dict) -> protocol._ClientModel:
    return protocol.parse_event(event, protocol.TRANSCRIPTION_CLIENT_EVENTS)


def refusal_of(event: dict) -> EventError:
    with pytest.raises(EventError) as refusal:
        parse(event)
    return refusal.value


def test_client_events_parse_as_the_sdk_sends_them() -> None:
    update = parse(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en", "prompt": ""},
                        "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 300},
                        "noise_reduction": {"type": "near_field"},
                    }
                },
            },
        }
    )
    assert isinstance(update, protocol.SessionUpdate)
    assert update.session.audio
    assert update.session.audio.input
    assert isinstance(update.session.audio.input.turn_detection, protocol.ServerVad)
    none_vad = parse(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}}}
    )
    assert isinstance(none_vad, protocol.SessionUpdate)
    assert none_vad.session.audio
    assert none_vad.session.audio.input
    assert "turn_detection" in none_vad.session.audio.input.model_fields_set


def test_bad_client_events_name_what_is_wrong() -> None:
    unknown_field = refusal_of(
        {
            "type": "session.update",
            "event_id": "e1",
            "session": {"type": "transcription", "audio": {"input": {"volume": 3}}},
        }
    )
    assert (unknown_field.code, unknown_field.param, unknown_field.event_id) == (
        "unknown_parameter",
        "session.audio.input.volume",
        "e1",
    )
    threshold = refusal_of(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 3}}},
            },
        }
    )
    assert threshold.param == "session.audio.input.turn_detection.threshold"
    assert threshold.code == "invalid_value"
    unknown_type = refusal_of({"type": "response.create", "event_id": "e2"})
    assert (unknown_type.code, unknown_type.param, unknown_type.event_id) == ("invalid_value", "type", "e2")
    assert "input_audio_buffer.append" in unknown_type.message
    missing = refusal_of({"type": "input_audio_buffer.append"})
    assert (missing.code, missing.param) == ("missing_required_parameter", "audio")
    assert refusal_of({"event_id": "x"}).code == "missing_required_parameter"


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "[" * 100_000, '"a string"'])
def test_frames_that_are_not_event_objects(text: str) -> None:
    with pytest.raises(EventError) as refusal:
        protocol.load_event(text)
    assert refusal.value.code == "invalid_json"


def test_server_events_validate_as_the_sdk_models() -> None:
    error = protocol.error_event(EventError("Bad.", param="type", code="invalid_value", event_id="client_1"))
    parsed = validate_type(type_=RealtimeErrorEvent, value=error)
    assert parsed.error.event_id == "client_1"
    assert set(error["error"]) == {"message", "type", "param", "code", "event_id"}
    item = protocol.user_audio_item("item_1", "Hello.", "completed")
    events = [
        protocol.server_event("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_1"),
        protocol.server_event("input_audio_buffer.committed", previous_item_id=None, item_id="item_1"),
        protocol.server_event("conversation.item.added", previous_item_id=None, item=item),
        protocol.server_event(
            "conversation.item.input_audio_transcription.completed",
            item_id="item_1",
            content_index=0,
            transcript="Hello.",
            usage={"type": "duration", "seconds": 1.5},
        ),
    ]
    for event in events:
        parsed = validate_type(type_=RealtimeServerEvent, value=event)  # type: ignore[arg-type]
        assert parsed.type == event["type"]
    closed = validate_type(type_=RealtimeTranslationServerEvent, value=protocol.server_event("session.closed"))  # type: ignore[arg-type]
    assert closed.type == "session.closed"


def test_logprobs_are_per_word() -> None:
    from faster_whisper.transcribe import Word

    [entry] = protocol.logprobs_of([Word(start=0, end=1, word=" été", probability=0.5)])
    assert entry["token"] == " été"
    assert entry["bytes"] == list(" été".encode())
    assert abs(entry["logprob"] - np.log(0.5)) < 1e-9
    json.dumps(entry)
